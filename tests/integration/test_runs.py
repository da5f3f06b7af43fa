"""Re-runs, changes, hashing of messy values, and the run endpoint's contract."""

from __future__ import annotations

import asyncio

import pytest

from consumer import etl
from service.core.contracts import RunRequest, ValidationResult
from service.core.store import lifecycle
from service.core.store.runs import ClaimOutcome
from tests.conftest import wait_for
from tests.integration.conftest import run_and_wait, upload_feed
from tests.integration.feeds import generate


async def n_tup_upd(db) -> int:
    return await db.fetchval("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'products'")


async def tuple_versions(db) -> dict[str, tuple[str, str]]:
    """Each row's physical identity: an UPDATE (even to equal values) changes both."""
    rows = await db.fetch("SELECT sku, xmin::text AS x, ctid::text AS c FROM products")
    return {r["sku"]: (r["x"], r["c"]) for r in rows}


async def test_identical_rerun_writes_nothing(client, acme, consumer, db, tmp_path):
    data, summary = generate(tmp_path, 3000, "--dirty-pct", "2")
    ids = await upload_feed(client, acme, data)
    jv = ids["validation_job_id"]
    first = await run_and_wait(client, acme, jv)
    r1 = first["result"]
    assert r1["rows_read"] == 3000 and r1["rows_rejected"] == summary["rejected"]
    assert r1["inserted"] == summary["valid"] == r1["rows_valid"]
    versions = await tuple_versions(db)
    second = await run_and_wait(client, acme, jv, {"force": True})
    r2 = second["result"]
    assert second["attempt"] == 2 and r2["file_unchanged"] is False
    assert (r2["inserted"], r2["updated"], r2["unchanged"]) == (0, 0, r1["rows_valid"])
    assert await tuple_versions(db) == versions  # no row was rewritten: no UPDATE, no dead tuple


async def test_one_percent_changed_updates_exactly_those(client, acme, consumer, db, tmp_path):
    base, _ = generate(tmp_path, 5000, "--seed", "1")
    changed, summary = generate(
        tmp_path, 5000, "--seed", "2", "--base-seed", "1", "--change-pct", "1"
    )
    ids = await upload_feed(client, acme, base)
    jv = ids["validation_job_id"]
    await run_and_wait(client, acme, jv)
    resp = await client.put(
        f"/feeds/{ids['feed_id']}/file", data=changed, headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 201
    versions = await tuple_versions(db)
    job = await run_and_wait(client, acme, jv)
    r = job["result"]
    assert summary["changed"] > 0
    assert (r["inserted"], r["updated"], r["unchanged"]) == (
        0,
        summary["changed"],
        5000 - summary["changed"],
    )
    after = await tuple_versions(db)
    assert sum(after[sku] != v for sku, v in versions.items()) == summary["changed"]
    # and the statistics agree, once the writer's backend has flushed them
    await wait_for(lambda: _equals(n_tup_upd(db), summary["changed"]), timeout=15)


async def _equals(value, expected) -> bool:
    return await value == expected


async def test_messy_spelling_hashes_equal_to_clean(client, acme, consumer, tmp_path):
    clean, _ = generate(tmp_path, 2000, "--seed", "3")
    messy, _ = generate(tmp_path, 2000, "--seed", "3", "--messy-pct", "60")
    assert clean != messy
    ids = await upload_feed(client, acme, clean)
    jv = ids["validation_job_id"]
    await run_and_wait(client, acme, jv)
    await client.put(
        f"/feeds/{ids['feed_id']}/file", data=messy, headers={**acme, "Content-Type": "text/csv"}
    )
    r = (await run_and_wait(client, acme, jv))["result"]
    assert (r["rows_valid"], r["inserted"], r["updated"], r["unchanged"]) == (2000, 0, 0, 2000)


async def test_run_errors_follow_the_seed(client, acme, globex):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\n")
    resp = await client.post(f"/jobs/{ids['submission_job_id']}/run", headers=acme)
    assert resp.status == 400
    body = await resp.json()
    assert body["detail"] == "Only validation jobs can be run"
    assert body["error_code"] == "JOB_NOT_RUNNABLE"
    for job in ("JV99999", ids["validation_job_id"]):
        headers = acme if job == "JV99999" else globex
        resp = await client.post(f"/jobs/{job}/run", headers=headers)
        assert resp.status == 404
        assert (await resp.json())["detail"] == "Job not found"


async def test_run_while_active_is_409(client, acme):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\n")
    jv = ids["validation_job_id"]
    assert (await client.post(f"/jobs/{jv}/run", headers=acme)).status == 202
    resp = await client.post(f"/jobs/{jv}/run", headers=acme)
    assert resp.status == 409
    body = await resp.json()
    assert body["error_code"] == "JOB_ALREADY_ACTIVE"
    assert body["details"] == {"job_id": jv, "status": "queued", "attempt": 1}


async def test_run_body_is_validated(client, acme):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\n")
    jv = ids["validation_job_id"]
    for body, field in (
        ({"mode": "merge"}, "mode"),
        ({"max_rejected_rows": -1}, "max_rejected_rows"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"colour": 1}, None),
    ):
        resp = await client.post(f"/jobs/{jv}/run", json=body, headers=acme)
        assert resp.status == 400, body
        err = await resp.json()
        assert err["error_code"] == "INVALID_REQUEST"
        if field:
            assert err["details"]["field"] == field
        else:
            assert "colour" in err["message"]
    resp = await client.post(
        f"/jobs/{jv}/run",
        data="mode=x",
        headers={**acme, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415


async def test_idempotency_key(client, acme):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\n")
    jv = ids["validation_job_id"]
    h = {**acme, "Idempotency-Key": "k-1"}
    first = await client.post(f"/jobs/{jv}/run", json={"dry_run": True}, headers=h)
    again = await client.post(f"/jobs/{jv}/run", json={"dry_run": True}, headers=h)
    assert first.status == again.status == 202
    assert (
        await first.json() == await again.json() == {"job_id": jv, "status": "queued", "attempt": 1}
    )
    other = await client.post(f"/jobs/{jv}/run", json={"dry_run": False}, headers=h)
    assert other.status == 422
    assert (await other.json())["error_code"] == "IDEMPOTENCY_KEY_REUSED"


async def test_cancel_queued_and_terminal(client, acme):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\n")
    jv = ids["validation_job_id"]
    resp = await client.post(f"/jobs/{jv}/cancel", headers=acme)
    assert resp.status == 409
    await client.post(f"/jobs/{jv}/run", headers=acme)
    resp = await client.post(f"/jobs/{jv}/cancel", headers=acme)
    assert resp.status == 202
    job = await resp.json()
    assert job["status"] == "cancelled" and job["error"]["code"] == "CANCELLED"
    resp = await client.post(f"/jobs/{jv}/cancel", headers=acme)
    assert resp.status == 409
    assert (await resp.json())["error_code"] == "JOB_NOT_CANCELLABLE"


async def test_long_poll_wakes_on_change(client, acme):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\n")
    jv = ids["validation_job_id"]
    first = await client.get(f"/jobs/{jv}", headers=acme)
    etag = first.headers["ETag"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(
        client.get(f"/jobs/{jv}?wait=30", headers={**acme, "If-None-Match": etag})
    )
    await asyncio.sleep(0.5)
    assert not poll.done()
    await client.post(f"/jobs/{jv}/run", headers=acme)
    resp = await poll
    assert resp.status == 200
    assert (await resp.json())["status"] == "queued"
    assert resp.headers["ETag"] != etag
    assert loop.time() - started < 5


async def test_long_poll_times_out_with_304(client, acme):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\n")
    jv = ids["validation_job_id"]
    await client.post(f"/jobs/{jv}/run", headers=acme)  # active: long polls hold
    first = await client.get(f"/jobs/{jv}", headers=acme)
    resp = await client.get(
        f"/jobs/{jv}?wait=1", headers={**acme, "If-None-Match": first.headers["ETag"]}
    )
    assert resp.status == 304
    resp = await client.get(f"/jobs/{jv}?wait=61", headers=acme)
    assert resp.status == 400


async def test_a_cancel_asked_before_the_commit_wins_over_the_completion(client, acme, db):
    """No timing games: the run is claimed, a cancel is asked, then the load tries to
    commit. The completion must refuse, so the load rolls back and the run ends cancelled."""
    ids = await upload_feed(client, acme, b"sku,name,price,currency\nA-1,Cap,1.00,USD\n")
    jv = ids["validation_job_id"]
    async with db.acquire() as conn:
        outcome, run = await lifecycle.claim(conn, RunRequest(job_id=jv), lease_seconds=30)
    assert outcome is ClaimOutcome.CLAIMED and run is not None
    resp = await client.post(f"/jobs/{jv}/cancel", headers=acme)
    assert resp.status == 202
    result = ValidationResult(
        rows_read=1,
        rows_valid=1,
        rows_rejected=0,
        inserted=1,
        updated=0,
        unchanged=0,
        deleted=0,
        bytes_read=40,
        file_unchanged=False,
        ignored_columns=[],
        first_error=None,
        duration_ms=1,
    )
    async with db.acquire() as conn:
        with pytest.raises(etl.RunCancelled):
            async with conn.transaction():
                await etl._complete(conn, run, result, ("etag", 40))
    job = await (await client.get(f"/jobs/{jv}", headers=acme)).json()
    assert job["status"] == "running"  # the consumer's handler then records it as cancelled
    # Without a cancel, the same completion goes through.
    await db.execute("UPDATE jobs SET cancel_requested = false WHERE id = $1", jv)
    async with db.acquire() as conn, conn.transaction():
        await etl._complete(conn, run, result, ("etag", 40))
    job = await (await client.get(f"/jobs/{jv}", headers=acme)).json()
    assert job["status"] == "completed"
