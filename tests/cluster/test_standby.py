"""Reads from a hot standby (``DATABASE_READ_URL``), on a primary and streaming standby pair
this test creates and owns: lists, pages and downloads read the standby; a standby behind
what a client has seen (replay paused) is not read, and the client never sees a job go back
in time; a standby down or lagging sends reads to the primary and ``/readyz`` says so; a
primary down leaves polls and lists answered by the standby while writes get 503."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import asyncpg
import msgspec
import pytest

from service.core.db import ensure_database
from service.core.migrate import migrate
from service.core.settings import Settings
from tests.cluster.postgres import StandbyPair, standby_pair
from tests.conftest import wait_for
from tests.integration.conftest import (
    ACME_KEY,
    GLOBEX_KEY,
    gateway,
    run_and_wait,
    running_consumer,
    upload_feed,
)

ACME = {"x-api-key": ACME_KEY}
GLOBEX = {"x-api-key": GLOBEX_KEY}
FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nA-2,Gadget,2.50,EUR\n"


@pytest.fixture(scope="module")
def pair() -> Iterator[StandbyPair]:
    with standby_pair() as p:
        yield p


@pytest.fixture
async def on_pair(settings: Settings, pair: StandbyPair) -> AsyncIterator[Settings]:
    name = "feedjobs_standby_test"
    s = msgspec.structs.replace(
        settings,
        database_url=pair.primary.url(name),
        database_read_url=pair.standby.url(name),
        max_replica_lag_seconds=1.0,
        replica_wait_seconds=0.2,
    )
    await ensure_database(s.database_url)
    conn = await asyncpg.connect(s.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield s


@pytest.fixture
async def primary_db(on_pair: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(on_pair.database_url, min_size=0, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


async def reads_by(client) -> dict[str, float]:  # type: ignore[no-untyped-def]
    text = await (await client.get("/metrics")).text()
    found = re.findall(r'feedjobs_db_reads_total\{server="(\w+)"\} ([0-9.e+]+)', text)
    return {server: float(n) for server, n in found}


async def readyz(client) -> tuple[int, dict]:  # type: ignore[no-untyped-def,type-arg]
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


async def test_reads_from_a_standby(on_pair, primary_db, pair, tmp_path):
    async with gateway(on_pair, primary_db) as client, running_consumer(on_pair):
        ids = await upload_feed(client, ACME, FEED)
        jv, feed = ids["validation_job_id"], ids["feed_id"]
        assert (await run_and_wait(client, ACME, jv))["status"] == "completed"

        async def standby_ok() -> bool:
            status, body = await readyz(client)
            return status == 200 and body["checks"].get("standby") == "ok"

        await wait_for(standby_ok, timeout=20)
        assert (await readyz(client))[1]["checks"]["reads"] == "standby"

        # 1. Lists, pages and downloads are read from the standby.
        before = await reads_by(client)
        for path in (
            "/jobs",
            "/feeds",
            f"/jobs/{jv}/runs",
            f"/jobs/{jv}/errors",
            f"/feeds/{feed}/products",
            f"/feeds/{feed}/changes",
        ):
            resp = await client.get(path, headers=ACME)
            assert resp.status == 200, (path, await resp.text())
        after = await reads_by(client)
        assert after["standby"] - before.get("standby", 0) == 6, (before, after)
        assert after.get("primary", 0) == before.get("primary", 0)

        # 2. Replay paused: the standby stops at what it has. A new run's end is seen by
        # the poll (the primary); the list and the run history that follow must not go
        # back: they are read from the primary, after waiting for the standby in vain.
        standby = await asyncpg.connect(on_pair.database_read_url)
        try:
            await standby.execute("SELECT pg_wal_replay_pause()")
            etags = []
            job = await run_and_wait(client, ACME, jv, {"force": True})
            assert job["attempt"] == 2 and job["status"] == "completed"
            before = await reads_by(client)
            for _ in range(5):
                polled = await client.get(f"/jobs/{jv}", headers=ACME)
                etags.append(int(polled.headers["ETag"].strip('"').split(".")[1]))
                listed = await (await client.get("/jobs", headers=ACME)).json()
                [row] = [j for j in listed["jobs"] if j["job_id"] == jv]
                assert (row["status"], row["attempt"]) == ("completed", 2), row
                runs = await (await client.get(f"/jobs/{jv}/runs", headers=ACME)).json()
                assert [r["attempt"] for r in runs["runs"]] == [2, 1]
            assert etags == sorted(etags)
            after = await reads_by(client)
            assert after["primary"] - before.get("primary", 0) == 10
            assert after["standby"] == before["standby"]

            # ... and once it has been behind for MAX_REPLICA_LAG_SECONDS, it is not even
            # waited for, and /readyz says so (still ready: the primary serves).
            async def lagging() -> bool:
                status, body = await readyz(client)
                return status == 200 and body["checks"]["standby"].startswith("lagging")

            await wait_for(lagging, timeout=10)
            assert (await readyz(client))[1]["checks"]["reads"] == "primary"
        finally:
            await standby.execute("SELECT pg_wal_replay_resume()")
            await standby.close()
        await wait_for(standby_ok, timeout=20)

        # 3. The standby down: reads go to the primary, and /readyz says so.
        pair.standby.stop("immediate")
        try:
            resp = await client.get("/jobs", headers=ACME)
            assert resp.status == 200  # a read that found it down went to the primary

            async def standby_down() -> bool:
                status, body = await readyz(client)
                return status == 200 and body["checks"]["standby"] == "down"

            await wait_for(standby_down, timeout=10)
            before = await reads_by(client)
            assert (await client.get(f"/feeds/{feed}/products", headers=ACME)).status == 200
            assert (await reads_by(client))["primary"] == before["primary"] + 1
        finally:
            pair.standby.start()
        await wait_for(standby_ok, timeout=30)

        # 4. The primary down: polls, lists and pages are answered by the standby, even
        # for a key never seen before; writes get 503; /readyz says read-only.
        pair.primary.stop("immediate")
        try:

            async def read_only() -> bool:
                status, body = await readyz(client)
                return status == 200 and body["status"] == "read-only"

            await wait_for(read_only, timeout=10)
            polled = await client.get(f"/jobs/{jv}", headers=ACME)
            assert polled.status == 200 and (await polled.json())["attempt"] == 2
            for path in ("/jobs", f"/jobs/{jv}/runs", f"/feeds/{feed}/products"):
                resp = await client.get(path, headers=ACME)
                assert resp.status == 200, (path, await resp.text())
            resp = await client.get("/jobs", headers=GLOBEX)  # its key: from the standby
            assert resp.status == 200 and (await resp.json())["jobs"] == []
            resp = await client.post(f"/jobs/{jv}/run", headers=ACME)
            assert resp.status == 503 and resp.headers["Retry-After"]
        finally:
            pair.primary.start()

        # 5. The primary back: writes work again, reads return to the standby.
        async def ready() -> bool:
            status, body = await readyz(client)
            return (
                status == 200 and body["status"] == "ready" and body["checks"]["rabbitmq"] == "ok"
            )

        await wait_for(ready, timeout=30)
        job = await run_and_wait(client, ACME, jv, {"force": True})
        assert job["status"] == "completed" and job["attempt"] == 3
