"""Fixtures for the HTTP API: the gateway app under aiohttp's test client, API keys."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

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
