"""No run hangs, and a cancel answered 202 always wins (issue: "Nothing stalls").

- Tiny files (empty, header only, one row, one bad row) × dry run × force × mode, run
  concurrently, twice (the second pass has stored rows to compare with): each run ends.
  Before the fix, a dry run of an empty file could hang for ever: the feeder closed the
  worker's stdin while the stored hashes were still being sent, and the error raised inside
  asyncpg's COPY callback left the connection waiting on itself.
- A run whose S3 download freezes mid-body (the proxy keeps the connection open and sends
  nothing) is stopped after RUN_STALL_SECONDS and re-queued, then completes.
- A cancel reaches that frozen run; a cancel survives a re-queue (shutdown, stall, lost
  consumer).
"""

from __future__ import annotations

import asyncio
import itertools

import msgspec

from consumer import sweeper
from service.core.contracts import RunRequest
from service.core.s3 import s3_client
from service.core.store import lifecycle
from tests.conftest import wait_for
from tests.faultproxy import FaultProxy
from tests.integration.conftest import (
    allow_prefix,
    running_consumer,
    upload_feed,
    wait_terminal,
)
from tests.integration.feeds import generate

HEADER = b"sku,name,price,currency\n"
TINY = {
    "empty": b"",
    "header_only": HEADER,
    "one_row": HEADER + b"A-1,Widget,1.50,USD\n",
    "one_bad_row": HEADER + b"A-1,Widget,not-a-price,USD\n",
}
TERMINAL = {"completed", "failed", "cancelled"}


async def _registered(client, acme, settings, db, name: str, body: bytes) -> str:
    """A feed registered by ``s3_uri`` on an object in the tenant's bucket (the way a
    0-byte object reaches us: an upload of nothing is refused at the API)."""
    key = f"tiny/{name}.csv"
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    await allow_prefix(db, "acme", f"s3://{settings.s3_bucket}/tiny/")
    uri = f"s3://{settings.s3_bucket}/{key}"
    resp = await client.post("/feeds", json={"s3_uri": uri, "name": name}, headers=acme)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["validation_job_id"])


async def test_tiny_files_in_every_mode_never_hang(client, acme, settings, db, consumer):
    combos = list(itertools.product(TINY, (True, False), (True, False), ("upsert", "snapshot")))
    # Two feeds of each file, so that two runs of the same kind go at once.
    jobs = {
        (kind, copy): await _registered(client, acme, settings, db, f"{kind}-{copy}", body)
        for kind, body in TINY.items()
        for copy in (0, 1)
    }

    async def one(kind: str, dry: bool, force: bool, mode: str, copy: int) -> tuple[str, str]:
        opts = {"dry_run": dry, "force": force, "mode": mode}
        jv = jobs[(kind, copy)]
        resp = await client.post(f"/jobs/{jv}/run?wait=20", json=opts, headers=acme)
        assert resp.status == 200, await resp.text()
        job = await resp.json()
        return f"{kind} {opts}", str(job["status"])

    for _pass in (1, 2):  # the second pass: feeds with stored rows, hash sets
        for combo in combos:
            ended = await asyncio.gather(one(*combo, 0), one(*combo, 1))
            stuck = [(what, status) for what, status in ended if status not in TERMINAL]
            assert not stuck, stuck
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 0


async def _frozen_mid_body(client, acme, settings, tmp_path, proxy: FaultProxy) -> str:
    """Upload a large feed and run it; freeze S3 once the run is reading the file."""
    big, _ = generate(tmp_path, 120_000, "--seed", "31")
    jv = (await upload_feed(client, acme, big))["validation_job_id"]
    assert (await client.post(f"/jobs/{jv}/run", headers=acme)).status == 202

    async def reading() -> bool:
        job = await (await client.get(f"/jobs/{jv}", headers=acme)).json()
        return job["status"] == "running" and (job["progress"] or {}).get("bytes_read", 0) > 0

    await wait_for(reading, timeout=30, interval=0.02)
    proxy.freeze()
    return str(jv)


async def test_a_run_frozen_mid_file_is_requeued_then_completes(
    client, acme, settings, db, tmp_path, s3_endpoint
):
    async with FaultProxy.for_url(s3_endpoint) as proxy:
        via = msgspec.structs.replace(
            settings, s3_endpoint_url=proxy.url(s3_endpoint), run_stall_seconds=2.0
        )
        async with running_consumer(via):
            jv = await _frozen_mid_body(client, acme, settings, tmp_path, proxy)

            async def stalled() -> bool:
                code = await db.fetchval(
                    "SELECT error->>'code' FROM job_runs WHERE job_id = $1 AND attempt = 1", jv
                )
                return code == "STALLED"

            await wait_for(stalled, timeout=30)
            proxy.thaw()
            done = await wait_terminal(client, acme, jv, timeout=90)
    assert done["status"] == "completed" and done["attempt"] >= 2, done
    assert done["result"]["inserted"] == 120_000
    assert await db.fetchval("SELECT count(*) FROM products") == 120_000


async def test_a_cancel_reaches_a_frozen_run(client, acme, settings, db, tmp_path, s3_endpoint):
    async with FaultProxy.for_url(s3_endpoint) as proxy:
        # The stall limit far away: only the cancel can end this run.
        via = msgspec.structs.replace(
            settings, s3_endpoint_url=proxy.url(s3_endpoint), run_stall_seconds=600.0
        )
        async with running_consumer(via):
            jv = await _frozen_mid_body(client, acme, settings, tmp_path, proxy)
            assert (await client.post(f"/jobs/{jv}/cancel", headers=acme)).status == 202
            done = await wait_terminal(client, acme, jv, timeout=30)
            proxy.thaw()
    assert done["status"] == "cancelled", done
    assert await db.fetchval("SELECT count(*) FROM products") == 0


async def test_a_cancel_survives_every_requeue(client, acme, settings, db):
    """A cancel asked of a running job, then the run given back (shutdown, stall,
    interruption) or its consumer lost: the job ends cancelled, never re-queued."""
    for how in ("shutdown", "stalled", "interrupted", "lost"):
        jv = (await upload_feed(client, acme, TINY["one_row"], f"?name={how}"))["validation_job_id"]
        async with db.acquire() as conn:
            _, run = await lifecycle.claim(conn, RunRequest(job_id=jv), 30)
        assert run is not None
        assert (await client.post(f"/jobs/{jv}/cancel", headers=acme)).status == 202
        if how == "lost":
            await db.execute(
                "UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = $1", jv
            )
            counts = await sweeper.sweep(db, max_attempts=3, requeue_after=60, queue_is_empty=False)
            assert counts["cancelled"] == 1, counts
        else:
            outcome = await lifecycle.release(db, run, how, max_interruptions=10)
            assert outcome == "cancelled", how
        row = await db.fetchrow("SELECT status, attempt FROM jobs WHERE id = $1", jv)
        assert (row["status"], row["attempt"]) == ("cancelled", 1), how
        assert await db.fetchval("SELECT count(*) FROM job_runs WHERE job_id = $1", jv) == 1
        assert (
            await db.fetchval("SELECT count(*) FROM outbox WHERE message_id LIKE $1", f"{jv}.2.%")
            == 0
        )
