"""An upload whose gateway is killed mid-body never stays "Receiving upload" for ever: the
gateway renews the submission's lease while it receives, and the sweeper fails one whose
lease ran out (UPLOAD_FAILED; a first upload's feed becomes upload_failed). Found by
``make soak``: a SIGKILLed gateway left JS00044 running."""

from __future__ import annotations

import asyncio

import msgspec

from consumer import sweeper
from service.core.store import feeds as feeds_store
from tests.conftest import wait_for
from tests.integration.conftest import gateway, upload_feed

FEED = b"sku,name,price,currency\nA-1,Cap,1.00,EUR\n"


async def _receiving(db, tenant_id: int) -> tuple[str, str]:
    """A feed and its submission as the gateway leaves them when it dies mid-upload."""
    async with db.acquire() as conn, conn.transaction():
        feed_id, js_id, _, _ = await feeds_store.create_feed(
            conn,
            tenant_id=tenant_id,
            name="dying",
            s3_uri=None,
            source="upload",
            mode="upsert",
            delimiter=",",
            max_rejected_rows=None,
            submission_status="running",
        )
    return feed_id, js_id


async def sweep(db) -> dict[str, int]:
    return await sweeper.sweep(
        db, max_attempts=3, requeue_after=60, queue_is_empty=False, upload_deadline=3600
    )


async def test_a_submission_whose_gateway_died_is_failed(client, acme, db):
    await upload_feed(client, acme, FEED)  # the tenant exists
    tenant_id = await db.fetchval("SELECT id FROM tenants WHERE name = 'acme'")
    dead_feed, dead = await _receiving(db, tenant_id)
    alive_feed, alive = await _receiving(db, tenant_id)
    legacy_feed, legacy = await _receiving(db, tenant_id)
    await db.execute("UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = $1", dead)
    await db.execute("UPDATE jobs SET lease_until = now() + interval '30 s' WHERE id = $1", alive)
    await db.execute(  # from before leases: no lease, and no change for over the deadline
        "UPDATE jobs SET lease_until = NULL, updated_at = now() - interval '2 hours' WHERE id = $1",
        legacy,
    )
    counts = await sweep(db)
    assert counts["uploads_failed"] == 2 and counts["requeued"] == 0
    for js_id, feed_id in ((dead, dead_feed), (legacy, legacy_feed)):
        job = await (await client.get(f"/jobs/{js_id}", headers=acme)).json()
        assert job["status"] == "failed" and job["error"]["code"] == "UPLOAD_FAILED", job
        feed = await (await client.get(f"/feeds/{feed_id}", headers=acme)).json()
        assert feed["status"] == "upload_failed"
    job = await (await client.get(f"/jobs/{alive}", headers=acme)).json()
    assert job["status"] == "running"
    assert (await sweep(db))["uploads_failed"] == 0


async def test_a_slow_upload_keeps_its_lease(settings, db, acme):
    short = msgspec.structs.replace(settings, upload_lease_seconds=1.5)

    async def slow_body():
        yield b"sku,name,price,currency\n"
        for i in range(8):
            await asyncio.sleep(0.5)
            yield b"S-%d,Thing,1.00,EUR\n" % i

    async with gateway(short, db) as client:
        upload = asyncio.create_task(
            client.post("/feeds", data=slow_body(), headers={**acme, "Content-Type": "text/csv"})
        )
        swept = 0
        while not upload.done():
            await asyncio.sleep(0.4)
            swept += (await sweep(db))["uploads_failed"]
        resp = await upload
        assert resp.status == 201, await resp.text()
        ids = await resp.json()
        assert swept == 0  # 4 s of a 1.5 s lease, renewed every 0.5 s
        job = await (await client.get(f"/jobs/{ids['submission_job_id']}", headers=acme)).json()
        assert job["status"] == "completed"


async def test_a_submission_is_never_receiving_without_a_lease(settings, db, acme):
    """The first lease is written by the transaction that creates the submission (its
    ``lease_until`` is exactly ``created_at`` + the lease): a database cut right after it
    leaves a submission the sweeper fails within the lease, not one without a lease that
    waits UPLOAD_DEADLINE_SECONDS (make soak found JS00186 so). So for a new version too."""
    release = asyncio.Event()

    async def held_body():
        yield b"sku,name,price,currency\n"
        await release.wait()
        yield b"S-1,Thing,1.00,EUR\n"

    async with gateway(settings, db) as client:
        headers = {**acme, "Content-Type": "text/csv"}
        ids = await (await client.post("/feeds", data=FEED, headers=headers)).json()
        for path, method in (
            ("/feeds", client.post),
            (f"/feeds/{ids['feed_id']}/file", client.put),
        ):
            release.clear()
            upload = asyncio.create_task(method(path, data=held_body(), headers=headers))

            async def receiving():
                return await db.fetchrow(
                    "SELECT id, lease_until - created_at AS lease FROM jobs"
                    " WHERE job_type = 'submission' AND status = 'running'"
                )

            row = await wait_for(receiving, timeout=10)
            assert row["lease"].total_seconds() == settings.upload_lease_seconds, path
            release.set()
            assert (await upload).status == 201
