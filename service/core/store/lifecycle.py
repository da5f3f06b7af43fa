"""The job lifecycle: each change of ``jobs.status`` is one function here, and no other
module writes that column (``tests/unit/test_layout.py`` checks it). The transitions, with
the function of each, are the table "Job states" of docs/operations.md, which
``test_job_states.py`` drives path by path and ``test_layout.py`` holds to these names.

Writes to a running job are fenced by its attempt: a consumer that lost its lease (its run
re-queued as attempt + 1) can no longer change the job. ``renew_lease``, ``write_progress``
and ``lease`` keep a running job running and tell its consumer whether it still holds it.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import asyncpg
import msgspec

from service.core.contracts import (
    ACTIVE_STATUSES,
    EffectiveOptions,
    JobError,
    RunRequest,
    encode,
)
from service.core.errors import TransitionRefused
from service.core.store import jobs as jobs_store
from service.core.store import outbox
from service.core.store.rows import FeedRow, JobRow, columns, one
from service.core.store.runs import (
    ClaimedRun,
    ClaimOutcome,
    Lease,
    Released,
    ReleaseReason,
    RunKey,
    RunToQueue,
    Spend,
)

# How a job starts: a validation job created, or a submission receiving an upload (running),
# with its object already there (completed), or waiting for a watched prefix's first
# object (created).
JobStart = Literal["created", "running", "completed"]

CANCELLED_BEFORE_START = JobError("CANCELLED", "Cancelled before it started")
CANCELLED_WHILE_RUNNING = JobError("CANCELLED", "Cancelled while running; nothing was written")


def _json(value: Any) -> str | None:
    return None if value is None else encode(value).decode()


async def _guarded(
    db: asyncpg.Connection | asyncpg.Pool, statement: str, job_id: str, *args: Any, to: str
) -> None:
    """Run a transition whose SQL names the states it may leave (``WHERE status IN ...
    RETURNING id``); a job in any other state refuses it: TransitionRefused, and the
    caller's transaction writes nothing."""
    if await db.fetchval(statement, job_id, *args) is None:
        raise TransitionRefused(
            f"Job {job_id} cannot go to {to} from the state it is in now",
            details={"job_id": job_id, "to": to},
        )


def _options_of(job: JobRow) -> EffectiveOptions:
    """The options a queued or running job was queued with."""
    assert job.options is not None, f"{job.id} has no options in state {job.status}"
    return msgspec.json.decode(job.options, type=EffectiveOptions)


# -- submissions ------------------------------------------------------------------------


async def create_job(
    conn: asyncpg.Connection,
    job_id: str,
    number: int,
    tenant_id: int,
    feed_id: str,
    job_type: Literal["submission", "validation"],
    status: JobStart,
    *,
    result: str | None = None,
    message: str | None = None,
) -> None:
    args = (job_id, number, tenant_id, feed_id, job_type, status, result, message)
    await conn.execute(_CREATE, *args)


async def end_submission(
    db: asyncpg.Connection | asyncpg.Pool,
    js_id: str,
    *,
    result: str | None,
    error: JobError | None,
    message: str,
) -> None:
    """A submission ends: completed with its result, or failed with its error."""
    await _guarded(db, _END_SUBMISSION, js_id, result, _json(error), message, to="ended")


async def renew_upload(db: asyncpg.Connection | asyncpg.Pool, js_id: str, seconds: float) -> None:
    """The gateway receiving a submission's body still is: its lease runs ``seconds`` on."""
    await db.execute(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $2)"
        " WHERE id = $1 AND job_type = 'submission' AND status = 'running'",
        js_id,
        float(seconds),
    )


async def expire_uploads(conn: asyncpg.Connection, older_than: float) -> list[tuple[str, str]]:
    """Submissions whose gateway stopped renewing their lease (it was killed mid-upload):
    failed UPLOAD_FAILED, and a feed whose first upload it was becomes ``upload_failed``.
    One without a lease (from before leases) counts as gone ``older_than`` seconds after
    its last change. Returns (job id, feed id) of each."""
    why = "The gateway receiving the upload stopped (its lease ran out); upload the file again"
    rows = await conn.fetch(
        "WITH gone AS (UPDATE jobs SET status = 'failed', message = $1, lease_until = NULL,"
        "  error = json_build_object('code', 'UPLOAD_FAILED', 'message', $1::text,"
        "   'details', json_build_object()), finished_at = statement_timestamp()"
        "  WHERE job_type = 'submission' AND status = 'running' AND (lease_until < now()"
        "   OR (lease_until IS NULL AND updated_at < now() - make_interval(secs => $2)))"
        "  RETURNING id, feed_id),"
        " feeds_failed AS (UPDATE feeds f SET status = 'upload_failed' FROM gone"
        "  WHERE f.id = gone.feed_id AND f.status = 'receiving')"
        " SELECT id, feed_id FROM gone",
        why,
        float(older_than),
    )
    return [(r["id"], r["feed_id"]) for r in rows]


# -- queue and cancel --------------------------------------------------------------------


class Refusal(enum.Enum):
    """Why a run cannot be requested of a job now: the one rule every path asks
    (``may_run``): the API, upstream run requests, schedules and S3 events."""

    NOT_RUNNABLE = "not_runnable"  # a submission job
    ALREADY_ACTIVE = "already_active"  # queued or running
    FEED_NOT_READY = "feed_not_ready"  # the feed has no stored file


def may_run(job_type: str, status: str, feed_status: str) -> Refusal | None:
    """Whether a new run may be queued of a job: None, or why not."""
    if job_type != "validation":
        return Refusal.NOT_RUNNABLE
    if status in ACTIVE_STATUSES:
        return Refusal.ALREADY_ACTIVE
    if feed_status != "ready":
        return Refusal.FEED_NOT_READY
    return None


async def request_run(
    conn: asyncpg.Connection,
    job: JobRow,
    feed_status: str,
    options: EffectiveOptions,
    *,
    requested_by: str,
    request_id: str | None,
    publish: bool = True,
) -> int | Refusal:
    """A new run of a (locked) job, if ``may_run`` allows it: its attempt, or the refusal."""
    refusal = may_run(job.job_type, job.status, feed_status)
    if refusal is not None:
        return refusal
    return await queue_run(
        conn, job, options, requested_by=requested_by, request_id=request_id, publish=publish
    )


async def queue_run(
    conn: asyncpg.Connection,
    job: JobRow,
    options: EffectiveOptions,
    *,
    requested_by: str,
    request_id: str | None,
    spend: Spend = "new_request",
    publish: bool = True,
) -> int:
    """Queue a new run of a (locked) validation job, with its run request in the outbox.

    ``spend`` says what the new attempt costs the run request's retry budget: a new request
    starts a fresh budget; a lost consumer spends one of MAX_ATTEMPTS; an interruption by a
    dependency counts apart (MAX_INTERRUPTIONS); a shutdown re-queue costs nothing.
    Must be called inside a transaction that holds the job's row lock. Returns the attempt.
    """
    run = RunToQueue(job.id, job.attempt, options, requested_by, request_id, spend)
    (attempt,) = await queue_runs(conn, [run], publish=publish)
    return attempt


async def queue_runs(
    conn: asyncpg.Connection, runs: list[RunToQueue], *, publish: bool = True
) -> list[int]:
    """``queue_run`` for many locked jobs at once: three statements whatever their number
    (the scheduler queues thousands in one tick). Returns the new attempts, in order."""
    attempts = [r.attempt + 1 for r in runs]
    ids = [r.job_id for r in runs]
    options = [encode(r.options).decode() for r in runs]
    queued = await conn.fetch(_QUEUE, ids, attempts, options, [r.spend for r in runs])
    if len(queued) != len(runs):
        missed = sorted(set(ids) - {r["id"] for r in queued})
        raise TransitionRefused(
            f"Job(s) {', '.join(missed[:5])} changed state: not queued",
            details={"job_ids": missed[:20]},
        )
    by, request_ids = [r.requested_by for r in runs], [r.request_id for r in runs]
    await conn.execute(_QUEUE_RUNS, ids, attempts, by, request_ids, options)
    if publish:
        await outbox.add_run_requests(
            conn, [(r.job_id, a, r.request_id) for r, a in zip(runs, attempts, strict=True)]
        )
    return attempts


async def cancel(conn: asyncpg.Connection, job: JobRow) -> None:
    """Cancel a locked job: queued → cancelled at once; running → flagged for the consumer."""
    if job.status == "queued":
        await _guarded(conn, _CANCEL, job.id, _json(CANCELLED_BEFORE_START), to="cancelled")
        await conn.execute(_CANCEL_RUN, job.id, job.attempt)
    else:
        await _guarded(conn, _CANCEL_ASK, job.id, to="cancelling")


# -- a consumer's run ----------------------------------------------------------------------


async def claim(
    conn: asyncpg.Connection, req: RunRequest, lease_seconds: int
) -> tuple[ClaimOutcome, ClaimedRun | None]:
    """Claim the run a request names. Upstream requests (no attempt) for an idle job start a
    new run, recorded as requested by ``amqp``."""
    async with conn.transaction():
        job_id = req.job_id or (await jobs_store.validation_job_of(conn, req.feed_id))
        job = await jobs_store.lock_job(conn, job_id) if job_id else None
        if job is None:
            return ClaimOutcome.UNKNOWN, None
        if job.job_type != "validation":
            return ClaimOutcome.NOT_RUNNABLE, None
        feed = one(FeedRow, await conn.fetchrow(_FEED, job.feed_id))
        assert feed is not None
        if job.status == "running":
            return ClaimOutcome.ALREADY_ACTIVE, None
        if job.status == "queued":
            if req.attempt is not None and req.attempt != job.attempt:
                return ClaimOutcome.STALE, None
            attempt = job.attempt
            options = _options_of(job)
            request_id = await jobs_store.run_request_id(conn, job.id, attempt)
        else:
            if req.attempt is not None:
                return ClaimOutcome.STALE, None  # a duplicate of a run that has ended
            options = jobs_store.effective_options(req.options, feed)
            queued = await request_run(
                conn,
                job,
                feed.status,
                options,
                requested_by="amqp",
                request_id=req.request_id,
                publish=False,
            )
            if isinstance(queued, Refusal):
                return ClaimOutcome.NOT_READY, None
            attempt, request_id = queued, req.request_id
        await _guarded(conn, _CLAIM, job.id, lease_seconds, attempt, to="running")
        await conn.execute(_CLAIM_RUN, job.id, attempt)
        # Rejections are kept for the latest run only.
        await conn.execute(_FORGET_REJECTIONS, job.id, attempt)
    return ClaimOutcome.CLAIMED, ClaimedRun(
        job_id=job.id,
        feed_id=job.feed_id,
        attempt=attempt,
        options=options,
        request_id=request_id,
        feed=feed,
    )


def _lease(row: asyncpg.Record | None) -> Lease:
    if row is None:
        return Lease.LOST
    return Lease.CANCEL_ASKED if row["cancel_requested"] else Lease.HELD


async def renew_lease(
    db: asyncpg.Pool | asyncpg.Connection, run: RunKey, lease_seconds: int
) -> Lease:
    return _lease(await db.fetchrow(_RENEW, run.job_id, run.attempt, lease_seconds))


async def write_progress(
    db: asyncpg.Pool | asyncpg.Connection,
    run: RunKey,
    progress: dict[str, Any],
    message: str,
    retry_after: int,
) -> Lease:
    args = (run.job_id, run.attempt, _json(progress), message, retry_after)
    return _lease(await db.fetchrow(_PROGRESS, *args))


async def lease(db: asyncpg.Pool | asyncpg.Connection, run: RunKey) -> Lease:
    """The run's lease as it stands, without renewing it."""
    return _lease(await db.fetchrow(_LEASE, run.job_id, run.attempt))


async def _end(
    db: asyncpg.Connection | asyncpg.Pool,
    run: RunKey,
    status: Literal["completed", "failed", "cancelled"],
    message: str,
    *,
    result: Any = None,
    error: JobError | None = None,
    file: tuple[str, int] | None = None,
    unless_cancelled: bool = False,
) -> bool:
    """End a running job (fenced) and its run record; False if it was no longer ours, or,
    with ``unless_cancelled``, if a cancel was asked meanwhile."""
    result_json, error_json = _json(result), _json(error)
    key = (run.job_id, run.attempt, status)
    end = _END_UNLESS_CANCELLED if unless_cancelled else _END
    if await db.fetchrow(end, *key, message, result_json, error_json) is None:
        return False
    etag, size = file if file else (None, None)
    await db.execute(_END_RUN, *key, result_json, error_json, etag, size)
    return True


async def complete(
    db: asyncpg.Connection | asyncpg.Pool,
    run: RunKey,
    result: Any,
    message: str,
    *,
    file: tuple[str, int] | None = None,
) -> bool:
    """running → completed, with the file (etag, size) it read. A cancel asked at any time
    before this commit wins (a cancel answered 202 must not be overtaken by a late commit):
    False then, and False too if the run was no longer ours (``lease`` tells which)."""
    return await _end(
        db, run, "completed", message, result=result, file=file, unless_cancelled=True
    )


async def fail(db: asyncpg.Connection | asyncpg.Pool, run: RunKey, error: JobError) -> bool:
    """running → failed with ``error``; False if the run was no longer ours."""
    return await _end(db, run, "failed", error.message, error=error)


async def cancelled(db: asyncpg.Connection | asyncpg.Pool, run: RunKey) -> bool:
    """running → cancelled (the consumer stopped for a cancel); False if no longer ours."""
    return await _end(db, run, "cancelled", "Cancelled", error=CANCELLED_WHILE_RUNNING)


async def _end_run_record(conn: asyncpg.Connection, run: RunKey, error: JobError) -> None:
    """End one run's record (``/runs``) as failed while the job itself goes on."""
    await conn.execute(_FAIL_RUN, run.job_id, run.attempt, _json(error))


async def release(
    pool: asyncpg.Pool, run: ClaimedRun, reason: ReleaseReason, *, max_interruptions: int
) -> Released:
    """Give a run back that this consumer cannot finish: re-queued at once as the next
    attempt, or cancelled if a cancel was asked meanwhile. A shutdown costs the run request
    nothing; an interruption by a dependency (or a stall) counts, and the
    ``max_interruptions``-th fails the job with INTERRUPTED."""
    async with pool.acquire() as conn, conn.transaction():
        job = await jobs_store.lock_job(conn, run.job_id)
        if job is None or job.status != "running" or job.attempt != run.attempt:
            return "gone"
        if job.cancel_requested:  # a cancel answered 202 survives any re-queue
            await cancelled(conn, run)
            return "cancelled"
        if reason != "shutdown" and job.interruptions + 1 >= max_interruptions:
            message = (
                f"Interrupted {job.interruptions + 1} times by unavailable dependencies"
                f" (PostgreSQL, S3); {max_interruptions} is the limit"
            )
            details = {"interruptions": job.interruptions + 1}
            await fail(conn, run, JobError("INTERRUPTED", message, details))
            return "failed"
        if reason == "shutdown":
            await _end_run_record(conn, run, JobError("ABANDONED", "The consumer stopped"))
        elif reason == "stalled":
            why = "The run made no progress for RUN_STALL_SECONDS and was stopped"
            await _end_run_record(conn, run, JobError("STALLED", why))
        else:
            why = "A dependency (PostgreSQL or S3) went away mid-run"
            await _end_run_record(conn, run, JobError("INTERRUPTED", why))
        spend: Spend = "nothing" if reason == "shutdown" else "interruption"
        await queue_run(
            conn, job, run.options, requested_by=reason, request_id=run.request_id, spend=spend
        )
    return "requeued"


async def expire(conn: asyncpg.Connection, job: JobRow, *, max_attempts: int) -> tuple[str, int]:
    """A locked running job whose lease ran out: its consumer is gone. Re-queued while the
    run request has lost fewer than ``max_attempts`` consumers, else failed WORKER_LOST.
    Returns what happened (``requeued``, ``failed``, or ``cancelled`` when a cancel was
    asked of the lost run) and the attempt it names."""
    run = RunKey(job_id=job.id, attempt=job.attempt)
    if job.cancel_requested:  # a cancel answered 202 survives the lost consumer
        await cancelled(conn, run)
        return "cancelled", run.attempt
    losses = job.losses + 1  # this run request's lost consumers, this one included
    if losses < max_attempts:
        why = "The consumer stopped renewing its lease"
        await _end_run_record(conn, run, JobError("WORKER_LOST", why))
        options = _options_of(job)
        attempt = await queue_run(
            conn, job, options, requested_by="sweeper", request_id=None, spend="loss"
        )
        return "requeued", attempt
    message = (
        f"{losses} consumers running this request were lost (the last ran attempt"
        f" {run.attempt}); {max_attempts} is the limit"
    )
    details = {"losses": losses, "attempt": run.attempt}
    await fail(conn, run, JobError("WORKER_LOST", message, details))
    return "failed", run.attempt


# -- the statements -------------------------------------------------------------------------

_CREATE = (
    "INSERT INTO jobs (id, seq, tenant_id, feed_id, job_type, status, result, message,"
    " attempt, started_at, finished_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8,"
    "  CASE WHEN $5 = 'submission' THEN 1 ELSE 0 END,"
    "  CASE WHEN $6 IN ('running', 'completed') THEN now() END,"
    "  CASE WHEN $6 = 'completed' THEN now() END)"
)
_END_SUBMISSION = (
    "UPDATE jobs SET status = CASE WHEN $2::json IS NULL THEN 'failed' ELSE 'completed' END,"
    " result = $2::json, error = $3::json, message = $4, finished_at = statement_timestamp()"
    " WHERE id = $1 AND job_type = 'submission' AND status IN ('created', 'running')"
    " RETURNING id"
)
# A new attempt: the terminal columns reset, the retry budget spent as ``spend`` says.
_QUEUE = (
    "UPDATE jobs j SET status = 'queued', attempt = u.attempt, options = u.options::json,"
    " queued_at = now(), published_at = NULL, started_at = NULL, finished_at = NULL,"
    " result = NULL, error = NULL, progress = NULL, retry_after = 2, lease_until = NULL,"
    " cancel_requested = false, message = 'Queued',"
    " losses = CASE u.spend WHEN 'new_request' THEN 0 WHEN 'loss' THEN j.losses + 1"
    "   ELSE j.losses END,"
    " interruptions = CASE u.spend WHEN 'new_request' THEN 0"
    "   WHEN 'interruption' THEN j.interruptions + 1 ELSE j.interruptions END"
    " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])"
    "   AS u(id, attempt, options, spend) WHERE j.id = u.id"
    # From-states: a new request queues an idle validation job; a re-queue (a lost consumer,
    # an interruption, a shutdown) only the running attempt it gives back.
    " AND j.job_type = 'validation' AND j.attempt = u.attempt - 1"
    " AND CASE u.spend WHEN 'new_request'"
    "   THEN j.status IN ('created', 'completed', 'failed', 'cancelled')"
    "   ELSE j.status = 'running' END"
    " RETURNING j.id"
)
_QUEUE_RUNS = (
    "INSERT INTO job_runs (job_id, attempt, status, requested_by, request_id, options)"
    " SELECT u.id, u.attempt, 'queued', u.requested_by, u.request_id, u.options::json"
    " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[])"
    "   AS u(id, attempt, requested_by, request_id, options)"
)
_CANCEL = (
    "UPDATE jobs SET status = 'cancelled', finished_at = now(), message = 'Cancelled',"
    " error = $2::json WHERE id = $1 AND status = 'queued' RETURNING id"
)
_CANCEL_ASK = (
    "UPDATE jobs SET cancel_requested = true, message = 'Cancelling'"
    " WHERE id = $1 AND status = 'running' RETURNING id"
)
_CANCEL_RUN = (
    "UPDATE job_runs SET status = 'cancelled', finished_at = now()"
    " WHERE job_id = $1 AND attempt = $2"
)
_FEED = f"SELECT {columns(FeedRow)} FROM feeds WHERE id = $1"
_CLAIM = (
    "UPDATE jobs SET status = 'running', started_at = now(), message = 'Starting',"
    " lease_until = now() + make_interval(secs => $2)"
    " WHERE id = $1 AND status = 'queued' AND attempt = $3 AND NOT cancel_requested"
    " RETURNING id"
)
_CLAIM_RUN = (
    "UPDATE job_runs SET status = 'running', started_at = now() WHERE job_id = $1 AND attempt = $2"
)
_FORGET_REJECTIONS = "DELETE FROM job_errors WHERE job_id = $1 AND attempt < $2"
# Writes to a running job are fenced by its attempt; each answers whether a cancel was asked.
_OURS = " WHERE id = $1 AND attempt = $2 AND status = 'running'"
_RENEW = (
    "UPDATE jobs SET lease_until = now() + make_interval(secs => $3)"
    + _OURS
    + " RETURNING cancel_requested"
)
_PROGRESS = (
    "UPDATE jobs SET progress = $3::json, message = $4, retry_after = $5"
    + _OURS
    + " RETURNING cancel_requested"
)
_LEASE = "SELECT cancel_requested FROM jobs" + _OURS
_END = (
    "UPDATE jobs SET status = $3, message = $4, result = $5::json, error = $6::json,"
    " finished_at = statement_timestamp(), lease_until = NULL, progress = NULL,"
    " retry_after = NULL, cancel_requested = false" + _OURS
)
_END_UNLESS_CANCELLED = _END + " AND NOT cancel_requested RETURNING id"
_END += " RETURNING id"
_END_RUN = (
    "UPDATE job_runs SET status = $3, finished_at = statement_timestamp(), result = $4::json,"
    " error = $5::json, file_etag = $6, file_size = $7 WHERE job_id = $1 AND attempt = $2"
)
_FAIL_RUN = (
    "UPDATE job_runs SET status = 'failed', finished_at = statement_timestamp(),"
    " error = $3::json WHERE job_id = $1 AND attempt = $2"
)
