"""A snapshot never deletes by accident: one that would delete more than ``max_deleted_ratio``
(default 0.5) of the feed's live products fails TOO_MANY_DELETIONS with the counts and
writes nothing; raised for the run (or the feed), it goes through. On every load path."""

from __future__ import annotations

import msgspec
import pytest

from tests.integration.conftest import run_and_wait, running_consumer, upload_feed

H = b"sku,name,price,currency\n"


def _feed(skus: range) -> bytes:
    return H + b"".join(b"S%d,Thing %d,1.00,USD\n" % (i, i) for i in skus)


@pytest.mark.parametrize("recognise", [True, False], ids=["recognising", "staged"])
async def test_a_snapshot_missing_60_percent_fails_then_goes_through_raised(
    client, acme, settings, db, recognise
):
    via = msgspec.structs.replace(settings, recognise_rows=recognise)
    async with running_consumer(via):
        ids = await upload_feed(client, acme, _feed(range(1000)), "?mode=snapshot")
        jv, feed_id = ids["validation_job_id"], ids["feed_id"]
        assert (await run_and_wait(client, acme, jv))["result"]["inserted"] == 1000
        before = await db.fetch("SELECT * FROM products ORDER BY sku")
        put = await client.put(
            f"/feeds/{feed_id}/file",
            data=_feed(range(400)),  # cut short upstream: 60% of the catalogue missing
            headers={**acme, "Content-Type": "text/csv"},
        )
        assert put.status == 201
        job = await run_and_wait(client, acme, jv)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "TOO_MANY_DELETIONS"
        assert job["error"]["details"] == {
            "would_delete": 600,
            "live_products": 1000,
            "max_deleted_ratio": 0.5,
        }
        assert await db.fetch("SELECT * FROM products ORDER BY sku") == before
        # A dry run says the same, and writes nothing either.
        dry = await run_and_wait(client, acme, jv, {"dry_run": True})
        assert dry["error"]["code"] == "TOO_MANY_DELETIONS"
        # 40% is within the default; raised for this run, 60% goes through.
        done = await run_and_wait(client, acme, jv, {"max_deleted_ratio": 0.6})
        assert done["status"] == "completed" and done["result"]["deleted"] == 600, done
        assert (
            await db.fetchval(
                "SELECT count(*) FROM products WHERE feed_id = $1 AND deleted_at IS NULL", feed_id
            )
            == 400
        )


async def test_the_ratio_is_a_feed_setting_and_validated(client, acme, consumer, db):
    for bad in ("2", "-0.1", "nan", "x"):
        resp = await client.post(
            f"/feeds?max_deleted_ratio={bad}",
            data=_feed(range(3)),
            headers={**acme, "Content-Type": "text/csv"},
        )
        assert resp.status == 400 and (await resp.json())["details"] == {
            "field": "max_deleted_ratio"
        }, bad
    ids = await upload_feed(client, acme, _feed(range(10)), "?mode=snapshot&max_deleted_ratio=1")
    feed = await (await client.get(f"/feeds/{ids['feed_id']}", headers=acme)).json()
    assert feed["max_deleted_ratio"] == 1.0
    jv = ids["validation_job_id"]
    await run_and_wait(client, acme, jv)
    await client.put(
        f"/feeds/{ids['feed_id']}/file",
        data=_feed(range(1)),
        headers={**acme, "Content-Type": "text/csv"},
    )
    done = await run_and_wait(client, acme, jv)  # the feed allows any share
    assert done["status"] == "completed" and done["result"]["deleted"] == 9
    bad_run = await client.post(f"/jobs/{jv}/run", json={"max_deleted_ratio": 1.5}, headers=acme)
    assert bad_run.status == 400
    assert (await bad_run.json())["details"]["field"] == "max_deleted_ratio"
