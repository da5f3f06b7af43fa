"""The job lifecycle: every change of ``jobs.status`` is one function of this module, and
no other module writes that column (``tests/unit/test_layout.py`` holds it to that).

    create    (new) → created | running | completed        create_job
    submit    running → completed | failed                   end_submission
    queue     created | completed | failed | cancelled → queued        queue_run(s)
    cancel    queued → cancelled; running → cancel asked    cancel
    claim     queued (or idle, for an upstream request) → running       claim
    renew     running (lease), progress                      renew_lease, write_progress
    complete  running → completed (unless a cancel was asked)           complete
    fail      running → failed                               fail
    cancelled running → cancelled                            cancelled
    release   running → queued | failed (shutdown, interruption)       release
    expire    running, lease run out → queued | failed      expire

The table of docs/operations.md ("Job states") is what these do; test_job_states.py drives
every path and compares. Every write to a running job is fenced by its attempt: a consumer
that lost its lease (its run re-queued as attempt + 1) can no longer change the job.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import asyncpg
import msgspec

from service.core.contracts import EffectiveOptions, JobError, RunRequest, encode
from service.core.store import jobs as jobs_store
from service.core.store import outbox
from service.core.store.rows import FeedRow, JobRow, one

# What queueing a run costs the run request's retry budget (see queue_runs).
Spend = Literal["new_request", "loss", "interruption", "nothing"]
ReleaseReason = Literal["shutdown", "interrupted"]
Released = Literal["requeued", "failed", "gone"]

CANCELLED_BEFORE_START = JobError("CANCELLED", "Cancelled before it started")
CANCELLED_WHILE_RUNNING = JobError("CANCELLED", "Cancelled while running; nothing was written")


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    UNKNOWN = "unknown"  # no such job or feed: dead-letter
    NOT_RUNNABLE = "not_runnable"  # a submission job: dead-letter
    NOT_READY = "not_ready"  # the feed has no stored file: dead-letter
    ALREADY_ACTIVE = "already_active"  # running (or queued for another message): no-op
    STALE = "stale"  # names an attempt that is not the queued one: no-op


class Lease(enum.Enum):
    """What a running job's consumer learns when it renews its lease or writes progress."""

    HELD = "held"  # still ours, carry on
    CANCEL_ASKED = "cancel_asked"  # still ours, but a client asked to cancel
    LOST = "lost"  # no longer ours (re-queued or ended by someone else): stop, write nothing


class RunKey(msgspec.Struct, kw_only=True):
    """One run: the job and its attempt (the fencing token)."""

    job_id: str
    attempt: int


class ClaimedRun(RunKey, kw_only=True):
    feed_id: str
    options: EffectiveOptions
    request_id: str | None
    feed: FeedRow
    phases: dict[str, int] = {}  # milliseconds since the run started, at the end of each phase
    stats: dict[str, Any] = {}  # how the load went: its path, fast-path rows, known rows


class RunToQueue(msgspec.Struct, frozen=True):
    """One run to queue: a (locked) validation job's id and current attempt, and the run's
    options, origin and what it costs the retry budget."""

    job_id: str
    attempt: int
    options: EffectiveOptions
    requested_by: str
    request_id: str | None
    spend: Spend = "new_request"


def _json(value: Any) -> str | None:
    return None if value is None else encode(value).decode()


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
    status: Literal["created", "running", "completed"],
    *,
    result: str | None = None,
    message: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO jobs (id, seq, tenant_id, feed_id, job_type, status, result, message,"
        " attempt, started_at, finished_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8,"
        "  CASE WHEN $5 = 'submission' THEN 1 ELSE 0 END,"
        "  CASE WHEN $6 IN ('running', 'completed') THEN now() END,"
        "  CASE WHEN $6 = 'completed' THEN now() END)",
        job_id,
        number,
        tenant_id,
        feed_id,
        job_type,
        status,
        result,
        message,
    )


async def end_submission(
    db: asyncpg.Connection | asyncpg.Pool,
    js_id: str,
    *,
    result: str | None,
    error: JobError | None,
    message: str,
) -> None:
    """A submission ends: completed with its result, or failed with its error."""
    await db.execute(
        "UPDATE jobs SET status = CASE WHEN $2::json IS NULL THEN 'failed' ELSE 'completed' END,"
        " result = $2::json, error = $3::json, message = $4, finished_at = statement_timestamp()"
        " WHERE id = $1",
        js_id,
        result,
        _json(error),
        message,
    )


# -- queue and cancel --------------------------------------------------------------------


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
    await conn.execute(
        "UPDATE jobs j SET status = 'queued', attempt = u.attempt, options = u.options::json,"
        " queued_at = now(), published_at = NULL, started_at = NULL, finished_at = NULL,"
        " result = NULL, error = NULL, progress = NULL, retry_after = 2, lease_until = NULL,"
        " cancel_requested = false, message = 'Queued',"
        " losses = CASE u.spend WHEN 'new_request' THEN 0 WHEN 'loss' THEN j.losses + 1"
        "   ELSE j.losses END,"
        " interruptions = CASE u.spend WHEN 'new_request' THEN 0"
        "   WHEN 'interruption' THEN j.interruptions + 1 ELSE j.interruptions END"
        " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])"
        "   AS u(id, attempt, options, spend) WHERE j.id = u.id",
        ids,
        attempts,
        options,
        [r.spend for r in runs],
    )
    await conn.execute(
        "INSERT INTO job_runs (job_id, attempt, status, requested_by, request_id, options)"
        " SELECT u.id, u.attempt, 'queued', u.requested_by, u.request_id, u.options::json"
        " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[])"
        "   AS u(id, attempt, requested_by, request_id, options)",
        ids,
        attempts,
        [r.requested_by for r in runs],
        [r.request_id for r in runs],
        options,
    )
    if publish:
        await outbox.add_run_requests(
            conn, [(r.job_id, a, r.request_id) for r, a in zip(runs, attempts, strict=True)]
        )
    return attempts


async def cancel(conn: asyncpg.Connection, job: JobRow) -> None:
    """Cancel a locked job: queued → cancelled at once; running → flagged for the consumer."""
    if job.status == "queued":
        await conn.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = now(), message = 'Cancelled',"
            " error = $2::json WHERE id = $1",
            job.id,
            _json(CANCELLED_BEFORE_START),
        )
        await conn.execute(
            "UPDATE job_runs SET status = 'cancelled', finished_at = now() WHERE job_id = $1"
            " AND attempt = $2",
            job.id,
            job.attempt,
        )
    else:
        await conn.execute(
            "UPDATE jobs SET cancel_requested = true, message = 'Cancelling' WHERE id = $1", job.id
        )


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
        feed = one(FeedRow, await conn.fetchrow("SELECT * FROM feeds WHERE id = $1", job.feed_id))
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
            if feed.status != "ready":
                return ClaimOutcome.NOT_READY, None
            options = jobs_store.effective_options(req.options, feed)
            attempt = await queue_run(
                conn, job, options, requested_by="amqp", request_id=req.request_id, publish=False
            )
            request_id = req.request_id
        await conn.execute(
            "UPDATE jobs SET status = 'running', started_at = now(), message = 'Starting',"
            " lease_until = now() + make_interval(secs => $2) WHERE id = $1",
            job.id,
            lease_seconds,
        )
        await conn.execute(
            "UPDATE job_runs SET status = 'running', started_at = now()"
            " WHERE job_id = $1 AND attempt = $2",
            job.id,
            attempt,
        )
        # Rejections are kept for the latest run only.
        await conn.execute(
            "DELETE FROM job_errors WHERE job_id = $1 AND attempt < $2", job.id, attempt
        )
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
    row = await db.fetchrow(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING cancel_requested",
        run.job_id,
        run.attempt,
        lease_seconds,
    )
    return _lease(row)


async def write_progress(
    db: asyncpg.Pool | asyncpg.Connection,
    run: RunKey,
    progress: dict[str, Any],
    message: str,
    retry_after: int,
) -> Lease:
    row = await db.fetchrow(
        "UPDATE jobs SET progress = $3::json, message = $4, retry_after = $5"
        " WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING cancel_requested",
        run.job_id,
        run.attempt,
        _json(progress),
        message,
        retry_after,
    )
    return _lease(row)


async def lease(db: asyncpg.Pool | asyncpg.Connection, run: RunKey) -> Lease:
    """The run's lease as it stands, without renewing it."""
    row = await db.fetchrow(
        "SELECT cancel_requested FROM jobs WHERE id = $1 AND attempt = $2 AND status = 'running'",
        run.job_id,
        run.attempt,
    )
    return _lease(row)


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
    fence = " AND NOT cancel_requested" if unless_cancelled else ""
    row = await db.fetchrow(
        "UPDATE jobs SET status = $3, message = $4, result = $5::json, error = $6::json,"
        " finished_at = statement_timestamp(), lease_until = NULL, progress = NULL,"
        " retry_after = NULL, cancel_requested = false"
        f" WHERE id = $1 AND attempt = $2 AND status = 'running'{fence} RETURNING id",
        run.job_id,
        run.attempt,
        status,
        message,
        result_json,
        error_json,
    )
    if row is None:
        return False
    etag, size = file if file else (None, None)
    await db.execute(
        "UPDATE job_runs SET status = $3, finished_at = statement_timestamp(), result = $4::json,"
        " error = $5::json, file_etag = $6, file_size = $7 WHERE job_id = $1 AND attempt = $2",
        run.job_id,
        run.attempt,
        status,
        result_json,
        error_json,
        etag,
        size,
    )
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
    await conn.execute(
        "UPDATE job_runs SET status = 'failed', finished_at = statement_timestamp(),"
        " error = $3::json WHERE job_id = $1 AND attempt = $2",
        run.job_id,
        run.attempt,
        _json(error),
    )


async def release(
    pool: asyncpg.Pool, run: ClaimedRun, reason: ReleaseReason, *, max_interruptions: int
) -> Released:
    """Give a run back that this consumer cannot finish: re-queued at once as the next
    attempt. A shutdown costs the run request nothing; an interruption by a dependency
    counts, and the ``max_interruptions``-th fails the job with INTERRUPTED."""
    async with pool.acquire() as conn, conn.transaction():
        job = await jobs_store.lock_job(conn, run.job_id)
        if job is None or job.status != "running" or job.attempt != run.attempt:
            return "gone"
        if reason == "interrupted" and job.interruptions + 1 >= max_interruptions:
            message = (
                f"Interrupted {job.interruptions + 1} times by unavailable dependencies"
                f" (PostgreSQL, S3); {max_interruptions} is the limit"
            )
            details = {"interruptions": job.interruptions + 1}
            await fail(conn, run, JobError("INTERRUPTED", message, details))
            return "failed"
        if reason == "shutdown":
            await _end_run_record(conn, run, JobError("ABANDONED", "The consumer stopped"))
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
    Returns what happened (``requeued`` or ``failed``) and the attempt it names."""
    run = RunKey(job_id=job.id, attempt=job.attempt)
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
