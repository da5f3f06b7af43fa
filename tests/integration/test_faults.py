"""Faults of the broker and the database, cut through a TCP proxy the test owns, and
signals to the consumer's whole process group. The real services are never stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import aio_pika
import aiohttp
import msgspec
import pytest
import structlog

from consumer import sweeper
from service.core.bus import Names
from service.core.contracts import RunRequest
from service.core.store import lifecycle
from service.core.store.lifecycle import ClaimOutcome
from service.gateway.app import BACKGROUND
from tests.conftest import wait_for
from tests.faultproxy import FaultProxy
from tests.integration.conftest import (
    ACME_KEY,
    consumer_process,
    gateway,
    run_and_wait,
    running_consumer,
    upload_feed,
    wait_terminal,
)
from tests.integration.feeds import generate

ACME = {"x-api-key": ACME_KEY}
FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nA-2,Gadget,2.50,EUR\n"


@pytest.fixture
async def amqp_proxy(settings) -> AsyncIterator[FaultProxy]:
    async with FaultProxy.for_url(settings.amqp_url) as proxy:
        yield proxy


@pytest.fixture
async def pg_proxy(settings) -> AsyncIterator[FaultProxy]:
    async with FaultProxy.for_url(settings.database_url) as proxy:
        yield proxy


async def job(client, job_id):
    return await (await client.get(f"/jobs/{job_id}", headers=ACME)).json()


async def runs_of(client, job_id):
    return (await (await client.get(f"/jobs/{job_id}/runs", headers=ACME)).json())["runs"]


async def wait_loading(client, job_id, timeout=30.0):
    async def loading():
        j = await job(client, job_id)
        return j["status"] == "running" and (j["progress"] or {}).get("rows_read", 0) > 0

    await wait_for(loading, timeout=timeout)


def alive(tasks) -> bool:
    return all(not t.done() for t in tasks)


async def test_broker_drop_during_run_request(settings, db, amqp_proxy):
    """POST /run while the broker is cut: 202, /readyz says so within a second, and the run
    happens once the broker is back; neither process dies."""
    via = msgspec.structs.replace(settings, amqp_url=amqp_proxy.url(settings.amqp_url))
    async with gateway(via, db) as client, running_consumer(via) as consumer:
        ids = await upload_feed(client, ACME, FEED)
        jv = ids["validation_job_id"]
        await wait_for(lambda: _ready(client), timeout=10)
        await amqp_proxy.cut()
        cut_at = time.monotonic()
        resp = await client.post(f"/jobs/{jv}/run", headers=ACME)
        assert resp.status == 202

        async def broker_down():
            resp = await client.get("/readyz")
            body = await resp.json()
            return resp.status == 503 and body["checks"]["rabbitmq"] == "down"

        await wait_for(broker_down, timeout=1.0, interval=0.02)
        assert time.monotonic() - cut_at < 1.0
        await asyncio.sleep(1.0)
        assert (await job(client, jv))["status"] == "queued"
        await amqp_proxy.restore()
        done = await wait_terminal(client, ACME, jv, timeout=60)
        assert done["status"] == "completed" and done["attempt"] == 1
        assert [r["attempt"] for r in await runs_of(client, jv)] == [1]
        assert alive(client.app[BACKGROUND]) and alive(consumer._background)
        await wait_for(lambda: _ready(client), timeout=15)
        assert consumer.consuming.is_set() and not consumer.stopping.is_set()


async def _ready(client) -> bool:
    return (await client.get("/readyz")).status == 200


async def test_broker_drop_mid_load_keeps_the_run_and_consuming(
    settings, client, db, amqp_proxy, tmp_path
):
    via = msgspec.structs.replace(settings, amqp_url=amqp_proxy.url(settings.amqp_url))
    big, _ = generate(tmp_path, 150_000, "--seed", "11")
    ids = await upload_feed(client, ACME, big)
    jv = ids["validation_job_id"]
    async with running_consumer(via) as consumer:
        with structlog.testing.capture_logs() as logs:
            await _cut_mid_load(client, jv, amqp_proxy, 0.5)
            done = await wait_terminal(client, ACME, jv, timeout=90)
        assert done["status"] == "completed" and done["attempt"] == 1
        # An expected dependency loss is a warning with its reason: no ERROR, no traceback,
        # and no lease "lost" by a run that had just completed.
        assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
        assert [e for e in logs if "exc_info" in e] == []
        assert any(e["event"] == "background_retry" for e in logs)
        assert not any(e["event"] == "run_lease_lost" for e in logs)
        assert done["result"]["inserted"] == 150_000
        # Still consuming after the drop: the next request runs too.
        await wait_for(lambda: _flag(consumer.consuming), timeout=15)
        again = await run_and_wait(client, ACME, jv, {"force": True})
        assert again["status"] == "completed" and again["attempt"] == 2
        assert again["result"]["unchanged"] == 150_000
        assert alive(consumer._background)


async def _cut_mid_load(client, jv: str, proxy: FaultProxy, down_s: float) -> None:
    """Run ``jv``; once it is loading, cut the proxy for ``down_s`` seconds."""
    await client.post(f"/jobs/{jv}/run", headers=ACME)
    await wait_loading(client, jv)
    await proxy.cut()
    await asyncio.sleep(down_s)
    await proxy.restore()


async def _flag(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_postgres_drop_mid_load_reruns_without_waiting_a_lease(
    settings, client, db, pg_proxy, tmp_path
):
    via = msgspec.structs.replace(
        settings, database_url=pg_proxy.url(settings.database_url), lease_seconds=120
    )
    big, _ = generate(tmp_path, 150_000, "--seed", "12")
    ids = await upload_feed(client, ACME, big)
    jv = ids["validation_job_id"]
    async with running_consumer(via) as consumer:
        await _cut_mid_load(client, jv, pg_proxy, 1.0)
        restored = time.monotonic()
        done = await wait_terminal(client, ACME, jv, timeout=90)
        # Re-queued as soon as PostgreSQL answered, not after the 120 s lease.
        assert time.monotonic() - restored < 60
        assert done["status"] == "completed" and done["attempt"] == 2
        assert done["result"]["inserted"] == 150_000
        history = await runs_of(client, jv)
        assert [(r["attempt"], r["status"], r["requested_by"]) for r in history] == [
            (2, "completed", "interrupted"),
            (1, "failed", f"api:{history[1]['requested_by'].split(':')[1]}"),
        ]
        assert history[1]["error"]["code"] == "INTERRUPTED"
        assert await db.fetchval("SELECT count(*) FROM products") == 150_000
        assert await db.fetchval("SELECT interruptions FROM jobs WHERE id = $1", jv) == 1
        assert alive(consumer._background)


@pytest.mark.parametrize(
    "sig,grace,expect",
    [(signal.SIGTERM, "30", "drained"), (signal.SIGINT, "0", "requeued")],
)
async def test_signal_to_the_process_group_drains_or_requeues(
    settings, client, db, tmp_path, sig, grace, expect
):
    """Ctrl-C or systemd's SIGTERM reach the whole group; the parse worker must not die
    with it: the run finishes within the grace, or is rolled back and re-queued at once."""
    big, _ = generate(tmp_path, 150_000, "--seed", "13")
    ids = await upload_feed(client, ACME, big)
    jv = ids["validation_job_id"]
    proc = consumer_process(settings, new_session=True, SHUTDOWN_GRACE_SECONDS=grace)
    try:
        await client.post(f"/jobs/{jv}/run", headers=ACME)
        await wait_loading(client, jv)
        os.killpg(proc.pid, sig)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    j = await job(client, jv)
    if expect == "drained":
        assert j["status"] == "completed" and j["attempt"] == 1, j
        assert j["result"]["inserted"] == 150_000
    else:
        assert j["status"] == "queued" and j["attempt"] == 2, j
        assert await db.fetchval("SELECT count(*) FROM products") == 0
        history = await runs_of(client, jv)
        assert history[0]["requested_by"] == "shutdown"
        assert history[1]["error"]["code"] == "ABANDONED"
        assert await db.fetchval("SELECT losses FROM jobs WHERE id = $1", jv) == 0


async def test_consumer_stops_promptly_when_idle(settings, client):
    proc = consumer_process(settings, new_session=True)
    names = Names(settings.amqp_prefix)
    conn = await aio_pika.connect(settings.amqp_url)
    try:

        async def consuming():
            channel = await conn.channel()  # a failed passive declare closes its channel
            try:
                queue = await channel.declare_queue(names.run_queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            await channel.close()
            return queue.declaration_result.consumer_count >= 1

        await wait_for(consuming, timeout=20)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert time.monotonic() - started < 3.0
    finally:
        await conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_retry_budget_belongs_to_the_run_request(settings, client, db):
    """Earlier runs and shutdown re-queues spend nothing; MAX_ATTEMPTS lost consumers of
    one request fail it with WORKER_LOST."""
    ids = await upload_feed(client, ACME, FEED)
    jv = ids["validation_job_id"]

    async def claim(attempt=None):
        async with db.acquire() as conn:
            outcome, run = await lifecycle.claim(conn, RunRequest(job_id=jv, attempt=attempt), 0)
        assert outcome is ClaimOutcome.CLAIMED, outcome
        return run

    async def sweep():
        return await sweeper.sweep(db, max_attempts=3, requeue_after=60, queue_is_empty=False)

    # A history of two finished runs.
    for _ in range(2):
        run = await claim()
        assert await lifecycle.complete(db, run, {}, "done")
    # A new request: attempt 3, then a deploy re-queues it (free), then two lost consumers.
    run = await claim()
    assert run.attempt == 3
    assert await lifecycle.release(db, run, "shutdown", max_interruptions=10) == "requeued"
    run = await claim(4)
    assert (await sweep())["requeued"] == 1  # first loss: the job's history did not count
    run = await claim(5)
    assert (await sweep())["requeued"] == 1
    run = await claim(6)
    counts = await sweep()
    assert counts == {
        "requeued": 0,
        "failed": 1,
        "cancelled": 0,
        "republished": 0,
        "uploads_failed": 0,
    }
    j = await job(client, jv)
    assert j["status"] == "failed" and j["error"]["code"] == "WORKER_LOST"
    assert j["error"]["details"] == {"losses": 3, "attempt": 6}
    # A new request starts a new budget.
    run = await claim()
    assert run.attempt == 7
    assert (await sweep())["requeued"] == 1


async def test_interruptions_are_bounded(settings, client, db):
    ids = await upload_feed(client, ACME, FEED)
    jv = ids["validation_job_id"]
    outcome = None
    attempt = None
    for _ in range(3):
        async with db.acquire() as conn:
            _, run = await lifecycle.claim(conn, RunRequest(job_id=jv, attempt=attempt), 30)
        outcome = await lifecycle.release(db, run, "interrupted", max_interruptions=3)
        attempt = run.attempt + 1
    assert outcome == "failed"
    j = await job(client, jv)
    assert j["status"] == "failed" and j["error"]["code"] == "INTERRUPTED"


async def test_gateway_stops_at_once_answering_its_long_polls(settings, client):
    """SIGTERM while clients long-poll: each gets the job as it is, and the process exits,
    instead of holding a deploy for SHUTDOWN_GRACE_SECONDS."""
    ids = await upload_feed(client, ACME, FEED)
    jv = ids["validation_job_id"]
    assert (await client.post(f"/jobs/{jv}/run", headers=ACME)).status == 202  # no consumer
    port = FaultProxy("127.0.0.1", 0).port  # a free port
    proc = consumer_process(settings, new_session=True, module="service", HTTP_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def up():
                try:
                    return (await http.get(f"{base}/readyz")).status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(up, timeout=20)
            polls = [
                asyncio.create_task(http.get(f"{base}/jobs/{jv}?wait=60", headers=ACME))
                for _ in range(5)
            ]
            await asyncio.sleep(0.5)
            started = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            answers = await asyncio.wait_for(asyncio.gather(*polls), 5)
            assert [a.status for a in answers] == [200] * 5
            assert {(await a.json())["status"] for a in answers} == {"queued"}
            assert await asyncio.to_thread(proc.wait, 10) == 0
            assert time.monotonic() - started < 3.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_s3_drop_mid_load_reruns_the_load(settings, client, db, tmp_path, s3_endpoint):
    """S3 cut off mid-read: the run is interrupted, rolled back, and re-queued; once S3 is
    back the load completes (no lease wait, nothing half-written)."""
    async with FaultProxy.for_url(s3_endpoint) as proxy:
        via = msgspec.structs.replace(
            settings, s3_endpoint_url=proxy.url(s3_endpoint), lease_seconds=120
        )
        big, _ = generate(tmp_path, 150_000, "--seed", "14")
        ids = await upload_feed(client, ACME, big)
        jv = ids["validation_job_id"]
        async with running_consumer(via):
            await _cut_mid_load(client, jv, proxy, 1.0)
            done = await wait_terminal(client, ACME, jv, timeout=90)
        assert done["status"] == "completed" and done["attempt"] >= 2, done
        assert done["result"]["inserted"] == 150_000
        history = await runs_of(client, jv)
        assert history[-1]["error"]["code"] == "INTERRUPTED"
        assert {r["requested_by"] for r in history[:-1]} == {"interrupted"}
        assert await db.fetchval("SELECT count(*) FROM products") == 150_000
