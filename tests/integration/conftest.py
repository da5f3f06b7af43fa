"""Fixtures for the HTTP API: the gateway app under aiohttp's test client, API keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from consumer.service import Consumer
from service.http.app import create_app
from service.settings import Settings
from service.store import keys as keys_store

ACME_KEY = "acme-test-key"
GLOBEX_KEY = "globex-test-key"


@pytest.fixture
async def client(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[TestClient]:
    async with db.acquire() as conn:
        await keys_store.add_key(conn, "acme", ACME_KEY)
        await keys_store.add_key(conn, "globex", GLOBEX_KEY)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
def acme() -> dict[str, str]:
    return {"x-api-key": ACME_KEY}


@pytest.fixture
def globex() -> dict[str, str]:
    return {"x-api-key": GLOBEX_KEY}


@pytest.fixture
async def consumer(settings: Settings, client: TestClient) -> AsyncIterator[Consumer]:
    """A real consumer (AMQP, S3, PostgreSQL, parse worker processes) in this event loop."""
    c = Consumer(settings)
    await c.start()
    yield c
    await c.stop()


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
