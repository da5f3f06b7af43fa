"""Fixtures for the HTTP API: the gateway app under aiohttp's test client, API keys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import IO

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp.test_utils import TestClient, TestServer

from consumer.worker import Consumer
from service.core.bus import Names, declare_topology
from service.core.settings import Settings
from service.core.store import keys as keys_store
from service.core.store import s3_prefixes
from service.gateway.app import create_app

ACME_KEY = "acme-test-key"
GLOBEX_KEY = "globex-test-key"


@contextlib.asynccontextmanager
async def gateway(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[TestClient]:
    """The gateway app (with its relay and listener) under aiohttp's test client."""
    async with db.acquire() as conn:
        await keys_store.add_key(conn, "acme", ACME_KEY)
        await keys_store.add_key(conn, "globex", GLOBEX_KEY)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as c:
        yield c


@contextlib.asynccontextmanager
async def running_consumer(settings: Settings) -> AsyncIterator[Consumer]:
    c = Consumer(settings)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def consumer_process(
    settings: Settings,
    *,
    new_session: bool = False,
    module: str = "consumer",
    logs: bool = False,
    log_file: IO[bytes] | None = None,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """``python -m consumer`` (or ``service``: the gateway) as its own process, configured
    like ``settings``; ``logs``: its output (JSON log lines, any traceback) kept for the test
    to read with ``communicate()``; ``log_file``: written there instead, for a long test
    (a pipe nobody reads while it runs would fill and block the process)."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "AMQP_URL": settings.amqp_url,
        "AMQP_PREFIX": settings.amqp_prefix,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "S3_BUCKET": settings.s3_bucket,
        "LOG_LEVEL": "WARNING",
        "CONSUMER_METRICS_PORT": "0",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=log_file or (subprocess.PIPE if logs else subprocess.DEVNULL),
        stderr=subprocess.STDOUT if logs or log_file else None,
        start_new_session=new_session,
    )


@pytest.fixture
async def channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """An AMQP channel on the test's topology, to publish as an upstream service would."""
    conn = await aio_pika.connect(settings.amqp_url)
    ch = await conn.channel()
    await declare_topology(ch, Names(settings.amqp_prefix))
    yield ch
    await conn.close()


@pytest.fixture
async def client(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[TestClient]:
    async with gateway(settings, db) as c:
        yield c


async def allow_prefix(db: asyncpg.Pool, tenant: str, prefix: str) -> None:
    """What ``python -m service allow-s3-prefix`` does."""
    async with db.acquire() as conn:
        await s3_prefixes.allow(conn, await keys_store.ensure_tenant(conn, tenant), prefix)


@pytest.fixture
def acme() -> dict[str, str]:
    return {"x-api-key": ACME_KEY}


@pytest.fixture
def globex() -> dict[str, str]:
    return {"x-api-key": GLOBEX_KEY}


@pytest.fixture
async def consumer(settings: Settings, client: TestClient) -> AsyncIterator[Consumer]:
    """A real consumer (AMQP, S3, PostgreSQL, parse worker processes) in this event loop."""
    async with running_consumer(settings) as c:
        yield c


async def run_and_wait(
    client: TestClient,
    headers: dict[str, str],
    job_id: str,
    body: dict[str, object] | None = None,
    wait: int = 60,
) -> dict[str, object]:
    """POST /run?wait and return the job once terminal."""
    resp = await client.post(f"/jobs/{job_id}/run?wait={wait}", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    job: dict[str, object] = await resp.json()
    assert job["status"] in ("completed", "failed", "cancelled"), job
    return job


async def upload_feed(
    client: TestClient, headers: dict[str, str], data: bytes, query: str = ""
) -> dict[str, str]:
    resp = await client.post(
        f"/feeds{query}", data=data, headers={**headers, "Content-Type": "text/csv"}
    )
    assert resp.status == 201, await resp.text()
    ids: dict[str, str] = await resp.json()
    return ids


async def wait_terminal(
    client: TestClient, headers: dict[str, str], job_id: str, timeout: float = 60
) -> dict[str, object]:
    """Long-poll GET /jobs/{id}?wait until the job is terminal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        resp = await client.get(f"/jobs/{job_id}?wait=5", headers=headers)
        job: dict[str, object] = await resp.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
    raise AssertionError(f"{job_id} did not finish in {timeout}s")
