"""A gateway or consumer started while PostgreSQL is unreachable waits for it (with the
backoff of every other connection, saying so in its log) and is ready once it answers:
before, ``ensure_database()`` ran ahead of the retry loop and the process exited with a
``ConnectionRefusedError`` traceback."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess

import aiohttp

from tests.faultproxy import FaultProxy
from tests.integration.conftest import consumer_process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(2)) as r,
        ):
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_gateway_and_consumer_started_during_an_outage_wait_then_serve(settings):
    proxy = FaultProxy.for_url(settings.database_url)  # not started: PostgreSQL is "down"
    via = proxy.url(settings.database_url)
    gw_port, consumer_port = _free_port(), _free_port()
    procs = {
        "gateway": consumer_process(
            settings,
            module="service",
            DATABASE_URL=via,
            HTTP_PORT=str(gw_port),
            LOG_LEVEL="INFO",
            logs=True,
        ),
        "consumer": consumer_process(
            settings,
            DATABASE_URL=via,
            CONSUMER_METRICS_PORT=str(consumer_port),
            LOG_LEVEL="INFO",
            logs=True,
        ),
    }
    try:
        await asyncio.sleep(4)
        assert {name: p.poll() for name, p in procs.items()} == {
            "gateway": None,
            "consumer": None,
        }
        await proxy.start()
        for port in (gw_port, consumer_port):
            for _ in range(150):
                if await _ready(port):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"port {port} never ready")
    finally:
        for p in procs.values():
            p.terminate()
        outputs = {}
        for name, p in procs.items():
            try:
                # In a thread: the proxy the process talks through runs on this loop.
                outputs[name] = (await asyncio.to_thread(p.communicate, timeout=30))[0]
            except subprocess.TimeoutExpired:
                p.kill()
                outputs[name] = p.communicate()[0] + b"\n(did not stop within 30 s)"
        await proxy.close()
    for name, err in outputs.items():
        lines = err.decode().splitlines()
        assert not [line for line in lines if not line.startswith("{")], (name, lines)
        events = [json.loads(line)["event"] for line in lines]
        assert "postgres_waiting" in events, (name, events)
        assert "postgres_ready" in events, (name, events)


async def test_a_gateway_started_while_s3_is_away_waits_for_it(settings, s3_endpoint):
    proxy = FaultProxy.for_url(s3_endpoint)  # not started: S3 is "down"
    port = _free_port()
    gw = consumer_process(
        settings,
        module="service",
        S3_ENDPOINT_URL=proxy.url(s3_endpoint),
        HTTP_PORT=str(port),
        LOG_LEVEL="INFO",
        logs=True,
    )
    seen: list[str] = []

    def until_waiting() -> bool:
        """Read the gateway's lines until it says it waits for S3 (after botocore's own
        retries of a refused connection, whose length varies with the machine's load:
        before, the gateway's start gave up there with a traceback)."""
        assert gw.stdout is not None
        for raw in gw.stdout:
            seen.append(raw.decode())
            if '"s3_waiting"' in seen[-1]:
                return True
        return False

    try:
        assert await asyncio.wait_for(asyncio.to_thread(until_waiting), 90)
        assert gw.poll() is None
        await proxy.start()
        for _ in range(150):
            if await _ready(port):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the gateway never became ready")
    finally:
        gw.terminate()
        out = "".join(seen) + (await asyncio.to_thread(gw.communicate, timeout=30))[0].decode()
        await proxy.close()
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert "s3_waiting" in events and "s3_ready" in events, events
