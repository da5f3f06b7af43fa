"""The state machine refuses what it must, in its SQL (each transition names the states it
may leave, ``WHERE status IN (...) RETURNING``), whatever its caller believed: in the style
of River's driver tests, each wrong transition is refused and writes nothing."""

from __future__ import annotations

import pytest

from service.core.contracts import EffectiveOptions, RunRequest
from service.core.errors import TransitionRefused
from service.core.store import jobs as jobs_store
from service.core.store import lifecycle
from service.core.store.runs import RunToQueue
from tests.integration.conftest import upload_feed

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"


async def _state(db, job_id: str) -> tuple:
    """Everything a transition could write: the job row, its runs, the outbox."""
    job = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    runs = await db.fetch("SELECT * FROM job_runs WHERE job_id = $1 ORDER BY attempt", job_id)
    outbox = await db.fetchval("SELECT count(*) FROM outbox")
    return dict(job), [dict(r) for r in runs], outbox


async def _job(client, acme) -> str:
    return str((await upload_feed(client, acme, FEED))["validation_job_id"])


async def _claimed(db, jv: str):
    async with db.acquire() as conn:
        outcome, run = await lifecycle.claim(conn, RunRequest(job_id=jv), 30)
    assert run is not None, outcome
    return run


async def test_completing_a_cancelled_job_is_refused(client, acme, db):
    jv = await _job(client, acme)
    run = await _claimed(db, jv)
    assert await lifecycle.cancelled(db, run)
    before = await _state(db, jv)
    assert not await lifecycle.complete(db, run, {"rows_read": 1}, "done")
    assert not await lifecycle.fail(db, run, lifecycle.CANCELLED_BEFORE_START)
    assert await _state(db, jv) == before


async def test_claiming_a_completed_job_is_refused(client, acme, db):
    jv = await _job(client, acme)
    run = await _claimed(db, jv)
    assert await lifecycle.complete(db, run, {}, "done")
    before = await _state(db, jv)
    async with db.acquire() as conn:
        # Through the lifecycle: a request naming that attempt is stale ...
        outcome, none = await lifecycle.claim(conn, RunRequest(job_id=jv, attempt=run.attempt), 30)
        assert none is None and outcome.value == "stale"
        # ... and the claim's own SQL refuses a completed job, whoever calls it.
        with pytest.raises(TransitionRefused):
            async with conn.transaction():
                await lifecycle._guarded(conn, lifecycle._CLAIM, jv, 30, run.attempt, to="running")
    assert await _state(db, jv) == before


async def test_cancelling_twice_is_refused(client, acme, db):
    jv = await _job(client, acme)
    async with db.acquire() as conn, conn.transaction():
        job = await jobs_store.lock_job(conn, jv)
        opts = EffectiveOptions(
            mode="upsert", max_rejected_rows=None, dry_run=False, force=False, delimiter=","
        )
        await lifecycle.queue_run(conn, job, opts, requested_by="t", request_id=None)
    async with db.acquire() as conn:
        async with conn.transaction():
            seen = await jobs_store.lock_job(conn, jv)  # queued, as the first caller saw it
            await lifecycle.cancel(conn, seen)
        before = await _state(db, jv)
        with pytest.raises(TransitionRefused):
            async with conn.transaction():
                await lifecycle.cancel(conn, seen)  # a second caller with the same stale view
    assert await _state(db, jv) == before
    assert before[0]["status"] == "cancelled"


async def test_a_stale_attempt_cannot_finish_or_requeue(client, acme, db):
    jv = await _job(client, acme)
    stale = await _claimed(db, jv)
    # Its lease ran out: the sweeper re-queued the job as the next attempt.
    async with db.acquire() as conn, conn.transaction():
        job = await jobs_store.lock_job(conn, jv)
        assert (await lifecycle.expire(conn, job, max_attempts=3))[0] == "requeued"
    before = await _state(db, jv)
    assert not await lifecycle.complete(db, stale, {}, "late")
    assert not await lifecycle.fail(db, stale, lifecycle.CANCELLED_BEFORE_START)
    assert not await lifecycle.cancelled(db, stale)
    assert await lifecycle.release(db, stale, "shutdown", max_interruptions=10) == "gone"
    async with db.acquire() as conn:
        with pytest.raises(TransitionRefused):
            async with conn.transaction():
                # Re-queueing the attempt it held, as a consumer that lost it might.
                await lifecycle.queue_runs(
                    conn,
                    [RunToQueue(jv, stale.attempt, stale.options, "t", None, "interruption")],
                )
    assert await _state(db, jv) == before


async def test_queueing_an_active_job_is_refused(client, acme, db):
    jv = await _job(client, acme)
    run = await _claimed(db, jv)
    before = await _state(db, jv)
    async with db.acquire() as conn, conn.transaction():
        job = await jobs_store.lock_job(conn, jv)
        refusal = await lifecycle.request_run(
            conn, job, "ready", run.options, requested_by="t", request_id=None
        )
    assert refusal is lifecycle.Refusal.ALREADY_ACTIVE
    async with db.acquire() as conn:
        with pytest.raises(TransitionRefused):
            async with conn.transaction():  # a new request's SQL refuses a running job too
                await lifecycle.queue_runs(
                    conn, [RunToQueue(jv, run.attempt, run.options, "t", None)]
                )
    assert await _state(db, jv) == before


async def test_ending_a_submission_twice_is_refused(client, acme, db):
    js = (await upload_feed(client, acme, FEED))["submission_job_id"]
    before = await _state(db, js)
    assert before[0]["status"] == "completed"
    with pytest.raises(TransitionRefused):
        await lifecycle.end_submission(db, js, result=None, error=None, message="again")
    assert await _state(db, js) == before
