"""Retention deletes only what it should (consumer/retention.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from consumer import retention
from service.core.s3 import head, parse_s3_uri, s3_client
from tests.integration.conftest import run_and_wait, upload_feed

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nbad sku,B,1,USD\n"


async def test_old_history_goes_and_a_job_keeps_its_summary(client, acme, consumer, db, settings):
    old = await upload_feed(client, acme, FEED)
    new = await upload_feed(client, acme, FEED)
    for ids in (old, new):
        for _ in range(2):
            await run_and_wait(client, acme, ids["validation_job_id"], {"force": True})
    # The first feed's runs finished 40 days ago; the second's just now.
    await db.execute(
        "UPDATE job_runs SET finished_at = now() - interval '40 days' WHERE job_id = $1",
        old["validation_job_id"],
    )
    await db.execute(  # and so did its first load's change set
        "UPDATE change_sets SET committed_at = now() - interval '40 days' WHERE job_id = $1",
        old["validation_job_id"],
    )
    # Webhook deliveries: an old delivered one goes; an old pending one stays.
    tenant_id = await db.fetchval("SELECT id FROM tenants WHERE name = 'acme'")
    await db.execute(
        "INSERT INTO webhooks (id, tenant_id, url, events, secret) VALUES"
        " ('WH00777', $1, 'http://127.0.0.1:9/x', '{job.completed}', 'whsec_AAAA')",
        tenant_id,
    )
    await db.execute(
        "INSERT INTO webhook_deliveries"
        " (id, webhook_id, event_type, body, status, created_at, next_attempt_at) VALUES"
        " ('msg_old', 'WH00777', 'webhook.test', '{}', 'delivered', now() - interval '40 days',"
        "  now()),"
        " ('msg_waiting', 'WH00777', 'webhook.test', '{}', 'pending', now() - interval '40 days',"
        "  now() + interval '1 hour'),"  # its next attempt is later: the deliverer leaves it
        " ('msg_new', 'WH00777', 'webhook.test', '{}', 'delivered', now(), now())"
    )
    async with s3_client(settings) as s3:
        counts = await retention.run_pass(db, s3, settings, datetime.now(UTC))
    assert counts == {"rejections": 1, "runs": 1, "deliveries": 1, "changes": 1, "files": 0}
    left = await db.fetch("SELECT id FROM webhook_deliveries WHERE webhook_id = 'WH00777'")
    assert sorted(r["id"] for r in left) == ["msg_new", "msg_waiting"]
    await db.execute("DELETE FROM webhooks WHERE id = 'WH00777'")
    # Old: the latest run stays (its rejections are gone), the earlier one went.
    history = await db.fetch("SELECT job_id, attempt FROM job_runs ORDER BY job_id, attempt")
    assert [(r["job_id"], r["attempt"]) for r in history] == [
        (old["validation_job_id"], 2),
        (new["validation_job_id"], 1),
        (new["validation_job_id"], 2),
    ]
    job = await (await client.get(f"/jobs/{old['validation_job_id']}", headers=acme)).json()
    assert job["result"]["rows_rejected"] == 1  # the summary stays
    fresh = await (
        await client.get(f"/jobs/{new['validation_job_id']}/errors", headers=acme)
    ).json()
    assert len(fresh["errors"]) == 1
    # The old feed's change feed is gone from its start (410), followable from now on; the
    # new one's is whole.
    gone = await client.get(f"/feeds/{old['feed_id']}/changes?since=0", headers=acme)
    assert gone.status == 410
    assert (await gone.json())["error_code"] == "CHANGES_EXPIRED"
    latest = await client.get(f"/feeds/{old['feed_id']}/changes?since=latest", headers=acme)
    assert (await latest.json())["changes"] == []
    kept = await (await client.get(f"/feeds/{new['feed_id']}/changes", headers=acme)).json()
    assert [(c["sku"], c["change"]) for c in kept["changes"]] == [("A-1", "inserted")]


async def test_file_versions_beyond_the_newest_few_are_deleted(client, acme, db, settings):
    ids = await upload_feed(client, acme, FEED)
    for _ in range(4):  # five versions in all
        resp = await client.put(
            f"/feeds/{ids['feed_id']}/file", data=FEED, headers={**acme, "Content-Type": "text/csv"}
        )
        assert resp.status == 201
    submissions = await db.fetch(
        "SELECT id, result->>'s3_uri' AS uri FROM jobs WHERE job_type = 'submission' ORDER BY seq"
    )
    keep3 = msgspec.structs.replace(settings, keep_file_versions=3)
    async with s3_client(settings) as s3:
        counts = await retention.run_pass(db, s3, keep3, datetime.now(UTC) + timedelta(days=1))
        assert counts["files"] == 2
        present = [await head(s3, parse_s3_uri(r["uri"])) is not None for r in submissions]
        assert present == [False, False, True, True, True]
        again = await retention.run_pass(db, s3, keep3)
        assert again["files"] == 0
    purged = await db.fetch("SELECT id FROM jobs WHERE file_purged_at IS NOT NULL ORDER BY seq")
    assert [r["id"] for r in purged] == [r["id"] for r in submissions[:2]]
    feed = await (await client.get(f"/feeds/{ids['feed_id']}", headers=acme)).json()
    assert feed["s3_uri"] == submissions[-1]["uri"]
