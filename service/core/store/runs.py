"""A run's life in PostgreSQL: claim (queued → running), lease renewal, and the end states.

Every write is fenced by the attempt: a consumer that lost its lease (and whose run was
re-queued as attempt + 1) can no longer change the job.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import asyncpg
import msgspec

from service.core.contracts import EffectiveOptions, JobErrorCode, RunRequest, encode
from service.core.store import jobs as jobs_store


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    UNKNOWN = "unknown"  # no such job or feed: dead-letter
    NOT_RUNNABLE = "not_runnable"  # a submission job: dead-letter
    NOT_READY = "not_ready"  # the feed has no stored file: dead-letter
    ALREADY_ACTIVE = "already_active"  # running (or queued for another message): no-op
    STALE = "stale"  # names an attempt that is not the queued one: no-op


class RunKey(msgspec.Struct, kw_only=True):
    """One run: the job and its attempt (the fencing token)."""

    job_id: str
    attempt: int


class ClaimedRun(RunKey, kw_only=True):
    feed_id: str
    options: EffectiveOptions
    request_id: str | None
    feed: dict[str, Any]
    phases: dict[str, int] = {}  # milliseconds since the run started, at the end of each phase
    stats: dict[str, Any] = {}  # how the load went: its path, fast-path rows, known rows


async def resolve_job_id(conn: asyncpg.Connection, req: RunRequest) -> str | None:
    if req.job_id is not None:
        return req.job_id
    if req.feed_id is not None:
        job_id: str | None = await conn.fetchval(
            "SELECT validation_job_id FROM feeds WHERE id = $1", req.feed_id
        )
        return job_id
    return None


async def claim(
    conn: asyncpg.Connection, req: RunRequest, lease_seconds: int
) -> tuple[ClaimOutcome, ClaimedRun | None]:
    """Claim the run a request names. Upstream requests (no attempt) for an idle job start a
    new run, recorded as requested by ``amqp``."""
    async with conn.transaction():
        job_id = await resolve_job_id(conn, req)
        job = await jobs_store.lock_job(conn, job_id) if job_id else None
        if job is None:
            return ClaimOutcome.UNKNOWN, None
        if job["job_type"] != "validation":
            return ClaimOutcome.NOT_RUNNABLE, None
        feed = await conn.fetchrow("SELECT * FROM feeds WHERE id = $1", job["feed_id"])
        assert feed is not None
        if job["status"] == "running":
            return ClaimOutcome.ALREADY_ACTIVE, None
        if job["status"] == "queued":
            if req.attempt is not None and req.attempt != job["attempt"]:
                return ClaimOutcome.STALE, None
            attempt = job["attempt"]
            options = msgspec.json.decode(job["options"], type=EffectiveOptions)
            request_id = await conn.fetchval(
                "SELECT request_id FROM job_runs WHERE job_id = $1 AND attempt = $2",
                job["id"],
                attempt,
            )
        else:
            if req.attempt is not None:
                return ClaimOutcome.STALE, None  # a duplicate of a run that has ended
            if feed["status"] != "ready":
                return ClaimOutcome.NOT_READY, None
            options = jobs_store.effective_options(req.options, feed)
            attempt = await jobs_store.queue_run(
                conn, job, options, requested_by="amqp", request_id=req.request_id, publish=False
            )
            request_id = req.request_id
        await conn.execute(
            "UPDATE jobs SET status = 'running', started_at = now(), message = 'Starting',"
            " lease_until = now() + make_interval(secs => $2) WHERE id = $1",
            job["id"],
            lease_seconds,
        )
        await conn.execute(
            "UPDATE job_runs SET status = 'running', started_at = now()"
            " WHERE job_id = $1 AND attempt = $2",
            job["id"],
            attempt,
        )
        # Rejections are kept for the latest run only.
        await conn.execute(
            "DELETE FROM job_errors WHERE job_id = $1 AND attempt < $2", job["id"], attempt
        )
    return ClaimOutcome.CLAIMED, ClaimedRun(
        job_id=job["id"],
        feed_id=job["feed_id"],
        attempt=attempt,
        options=options,
        request_id=request_id,
        feed=dict(feed),
    )


async def renew_lease(
    db: asyncpg.Pool | asyncpg.Connection, run: ClaimedRun, lease_seconds: int
) -> bool | None:
    """Extend the lease; None if the run is no longer ours, else whether cancel was asked."""
    row = await db.fetchrow(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING cancel_requested",
        run.job_id,
        run.attempt,
        lease_seconds,
    )
    return None if row is None else bool(row["cancel_requested"])


async def write_progress(
    db: asyncpg.Pool | asyncpg.Connection,
    run: ClaimedRun,
    progress: dict[str, Any],
    message: str,
    retry_after: int,
) -> bool | None:
    row = await db.fetchrow(
        "UPDATE jobs SET progress = $3::json, message = $4, retry_after = $5"
        " WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING cancel_requested",
        run.job_id,
        run.attempt,
        encode(progress).decode(),
        message,
        retry_after,
    )
    return None if row is None else bool(row["cancel_requested"])


async def finish(
    conn: asyncpg.Connection | asyncpg.Pool,
    run: RunKey,
    status: str,
    *,
    message: str,
    result: Any = None,
    error: Any = None,
    file_etag: str | None = None,
    file_size: int | None = None,
    unless_cancelled: bool = False,
) -> bool:
    """End the run (fenced); False if it was no longer ours, or, with ``unless_cancelled``,
    if a cancel was asked meanwhile (a cancel answered 202 must win over a late commit)."""
    result_json = None if result is None else encode(result).decode()
    error_json = None if error is None else encode(error).decode()
    fence = " AND NOT cancel_requested" if unless_cancelled else ""
    row = await conn.fetchrow(
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
    await conn.execute(
        "UPDATE job_runs SET status = $3, finished_at = statement_timestamp(), result = $4::json,"
        " error = $5::json, file_etag = $6, file_size = $7 WHERE job_id = $1 AND attempt = $2",
        run.job_id,
        run.attempt,
        status,
        result_json,
        error_json,
        file_etag,
        file_size,
    )
    return True


async def cancel_requested(db: asyncpg.Pool | asyncpg.Connection, run: ClaimedRun) -> bool | None:
    """None if the run is no longer ours, else whether a cancel was asked."""
    flag: bool | None = await db.fetchval(
        "SELECT cancel_requested FROM jobs WHERE id = $1 AND attempt = $2 AND status = 'running'",
        run.job_id,
        run.attempt,
    )
    return flag


async def record_run_failure(
    conn: asyncpg.Connection, run: RunKey, code: JobErrorCode, message: str
) -> None:
    """End one run's record (``/runs``) as failed while the job itself goes on."""
    await conn.execute(
        "UPDATE job_runs SET status = 'failed', finished_at = statement_timestamp(),"
        " error = $3::json WHERE job_id = $1 AND attempt = $2",
        run.job_id,
        run.attempt,
        encode({"code": code, "message": message}).decode(),
    )


ReleaseReason = Literal["shutdown", "interrupted"]


async def release(
    pool: asyncpg.Pool, run: ClaimedRun, reason: ReleaseReason, *, max_interruptions: int
) -> str:
    """Give a run back that this consumer cannot finish: re-queued at once as the next
    attempt. A shutdown costs the run request nothing; an interruption by a dependency
    counts, and the ``max_interruptions``-th fails the job with INTERRUPTED.

    Returns what happened: ``requeued``, ``failed``, or ``gone`` (no longer ours)."""
    async with pool.acquire() as conn, conn.transaction():
        job = await jobs_store.lock_job(conn, run.job_id)
        if job is None or job["status"] != "running" or job["attempt"] != run.attempt:
            return "gone"
        if reason == "interrupted" and job["interruptions"] + 1 >= max_interruptions:
            message = (
                f"Interrupted {job['interruptions'] + 1} times by unavailable dependencies"
                f" (PostgreSQL, S3); {max_interruptions} is the limit"
            )
            await finish(
                conn,
                run,
                "failed",
                message=message,
                error={
                    "code": "INTERRUPTED",
                    "message": message,
                    "details": {"interruptions": job["interruptions"] + 1},
                },
            )
            return "failed"
        if reason == "shutdown":
            await record_run_failure(conn, run, "ABANDONED", "The consumer stopped")
        else:
            await record_run_failure(
                conn, run, "INTERRUPTED", "A dependency (PostgreSQL or S3) went away mid-run"
            )
        await jobs_store.queue_run(
            conn,
            job,
            run.options,
            requested_by=reason,
            request_id=run.request_id,
            spend="nothing" if reason == "shutdown" else "interruption",
        )
    return "requeued"


async def last_completed(db: asyncpg.Pool, job_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT attempt, options::text AS options, result::text AS result, file_etag, file_size"
        " FROM job_runs WHERE job_id = $1 AND status = 'completed'"
        " ORDER BY attempt DESC LIMIT 1",
        job_id,
    )


# -- the sweeper's reads (consumer/sweeper.py) -------------------------------------------


async def lock_expired(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Running jobs whose lease ran out (their consumer is gone), locked; others skipped."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM jobs WHERE status = 'running' AND lease_until < now() FOR UPDATE SKIP LOCKED"
    )
    return rows


async def lock_lost_requests(conn: asyncpg.Connection, older_than: int) -> list[asyncpg.Record]:
    """Jobs queued for longer than ``older_than`` seconds while no run request is waiting
    in the outbox (the caller knows the broker's queue is empty): their message was lost."""
    lost = (
        "SELECT id, attempt FROM jobs WHERE status = 'queued'"
        " AND queued_at < now() - make_interval(secs => $1)"
        " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sent_at IS NULL"
        "   AND o.exchange = 'jobs')"
        " FOR UPDATE SKIP LOCKED"
    )
    return list(await conn.fetch(lost, older_than))


async def touch_queued(conn: asyncpg.Connection, job_id: str) -> None:
    """A lost request was published again: the job waits from now."""
    await conn.execute("UPDATE jobs SET queued_at = now() WHERE id = $1", job_id)
