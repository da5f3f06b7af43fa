"""Jobs: the read views, listing, and the state changes shared by gateway and consumer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from service.core.contracts import EffectiveOptions, RunOptions, RunRequest, encode

# What queueing a run costs the run request's retry budget (see queue_run).
Spend = Literal["new_request", "loss", "interruption", "nothing"]

JOB_COLUMNS = """
    j.id AS job_id, j.feed_id, j.job_type, j.status, rfc3339(j.created_at) AS created_at,
    rfc3339(j.updated_at) AS updated_at, rfc3339(j.started_at) AS started_at,
    rfc3339(j.finished_at) AS finished_at, j.attempt, j.message, j.progress::text AS progress,
    CASE WHEN j.status IN ('queued', 'running') THEN coalesce(j.retry_after, 2) END AS retry_after,
    j.result::text AS result, j.error::text AS error, j.version
"""

GET_JOB_SQL = f"SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = $1 AND j.tenant_id = $2"


async def get_job(
    db: asyncpg.Pool | asyncpg.Connection, job_id: str, tenant_id: int
) -> asyncpg.Record | None:
    return await db.fetchrow(GET_JOB_SQL, job_id, tenant_id)


async def list_jobs(
    db: asyncpg.Pool,
    tenant_id: int,
    *,
    statuses: list[str] | None,
    job_type: str | None,
    feed_id: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    cursor: tuple[datetime, int, str] | None,
    limit: int,
    newest_first: bool = True,
    with_total: bool = False,
) -> tuple[list[asyncpg.Record], int | None]:
    """A page of the tenant's jobs in creation order (newest first unless asked), and, if
    asked, how many match the filters in all."""
    where = ["j.tenant_id = $1"]
    args: list[Any] = [tenant_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if statuses:
        where.append(f"j.status = ANY({arg(statuses)}::text[])")
    if job_type:
        where.append(f"j.job_type = {arg(job_type)}")
    if feed_id:
        where.append(f"j.feed_id = {arg(feed_id)}")
    if created_after:
        where.append(f"j.created_at > {arg(created_after)}")
    if created_before:
        where.append(f"j.created_at < {arg(created_before)}")
    total: int | None = None
    if with_total:
        total = await db.fetchval(f"SELECT count(*) FROM jobs j WHERE {' AND '.join(where)}", *args)
    if cursor:
        after = f"({arg(cursor[0])}, {arg(cursor[1])}, {arg(cursor[2])})"
        where.append(f"(j.created_at, j.seq, j.id) {'<' if newest_first else '>'} {after}")
    order = "DESC" if newest_first else "ASC"
    sql = (
        f"SELECT {JOB_COLUMNS}, j.created_at AS created_ts, j.seq FROM jobs j"
        f" WHERE {' AND '.join(where)}"
        f" ORDER BY j.created_at {order}, j.seq {order}, j.id {order} LIMIT {arg(limit)}"
    )
    rows: list[asyncpg.Record] = await db.fetch(sql, *args)
    return rows, total


def effective_options(options: RunOptions | None, feed: asyncpg.Record) -> EffectiveOptions:
    opts = options or RunOptions()
    return EffectiveOptions(
        mode=opts.mode or feed["mode"],
        max_rejected_rows=(
            opts.max_rejected_rows
            if opts.max_rejected_rows is not None
            else feed["max_rejected_rows"]
        ),
        dry_run=opts.dry_run,
        force=opts.force,
        delimiter=feed["delimiter"],
    )


async def lock_job(
    conn: asyncpg.Connection, job_id: str, tenant_id: int | None = None
) -> asyncpg.Record | None:
    if tenant_id is None:
        return await conn.fetchrow("SELECT * FROM jobs WHERE id = $1 FOR UPDATE", job_id)
    return await conn.fetchrow(
        "SELECT * FROM jobs WHERE id = $1 AND tenant_id = $2 FOR UPDATE", job_id, tenant_id
    )


class RunToQueue(msgspec.Struct, frozen=True):
    """One run to queue: a (locked) validation job's id and current attempt, and the run's
    options, origin and what it costs the retry budget (see ``queue_run``)."""

    job_id: str
    attempt: int
    options: EffectiveOptions
    requested_by: str
    request_id: str | None
    spend: Spend = "new_request"


async def queue_run(
    conn: asyncpg.Connection,
    job: asyncpg.Record,
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
    run = RunToQueue(job["id"], job["attempt"], options, requested_by, request_id, spend)
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
        await enqueue_run_messages(
            conn, [(r.job_id, a, r.request_id) for r, a in zip(runs, attempts, strict=True)]
        )
    return attempts


async def enqueue_run_message(
    conn: asyncpg.Connection, job_id: str, attempt: int, request_id: str | None
) -> None:
    await enqueue_run_messages(conn, [(job_id, attempt, request_id)])


async def enqueue_run_messages(
    conn: asyncpg.Connection, wakes: list[tuple[str, int, str | None]]
) -> None:
    """Run requests into the outbox, one statement: (job id, attempt, request id) each."""
    await conn.execute(
        "INSERT INTO outbox (exchange, routing_key, message_id, body)"
        " SELECT 'jobs', 'run', u.message_id, u.body FROM unnest($1::text[], $2::bytea[])"
        "   AS u(message_id, body)",
        [f"{job_id}.{attempt}.{uuid.uuid4().hex[:8]}" for job_id, attempt, _ in wakes],
        [
            encode(RunRequest(job_id=job_id, attempt=attempt, request_id=request_id))
            for job_id, attempt, request_id in wakes
        ],
    )


async def cancel(conn: asyncpg.Connection, job: asyncpg.Record) -> None:
    """Cancel a locked job: queued → cancelled at once; running → flagged for the consumer."""
    if job["status"] == "queued":
        await conn.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = now(), message = 'Cancelled',"
            ' error = \'{"code": "CANCELLED", "message": "Cancelled before it started"}\''
            " WHERE id = $1",
            job["id"],
        )
        await conn.execute(
            "UPDATE job_runs SET status = 'cancelled', finished_at = now() WHERE job_id = $1"
            " AND attempt = $2",
            job["id"],
            job["attempt"],
        )
    else:
        await conn.execute(
            "UPDATE jobs SET cancel_requested = true, message = 'Cancelling' WHERE id = $1",
            job["id"],
        )


async def list_runs(db: asyncpg.Pool, job_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT attempt, status, rfc3339(requested_at) AS requested_at,"
        " rfc3339(started_at) AS started_at, rfc3339(finished_at) AS finished_at, requested_by,"
        " options::text AS options, result::text AS result, error::text AS error"
        " FROM job_runs WHERE job_id = $1 ORDER BY attempt DESC",
        job_id,
    )
    return rows


async def list_errors(
    db: asyncpg.Pool, job_id: str, attempt: int, after: tuple[int, int], limit: int
) -> list[asyncpg.Record]:
    """Rejections in file order (by line), after the (line, ordinal) ``after``."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT ordinal, line, column_name, code, message, raw FROM job_errors"
        " WHERE job_id = $1 AND attempt = $2 AND (line, ordinal) > ($3, $4)"
        " ORDER BY line, ordinal LIMIT $5",
        job_id,
        attempt,
        after[0],
        after[1],
        limit,
    )
    return rows


async def stream_errors(
    db: asyncpg.Pool, job_id: str, attempt: int, batch: int = 2000
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every rejection of one run in file order, ``batch`` rows at a time, from a
    server-side cursor: memory holds one batch, whatever the number of rows."""
    async with db.acquire() as conn, conn.transaction():
        cursor = await conn.cursor(
            "SELECT line, column_name, code, message, raw FROM job_errors"
            " WHERE job_id = $1 AND attempt = $2 ORDER BY line, ordinal",
            job_id,
            attempt,
        )
        while rows := await cursor.fetch(batch):
            yield rows


async def latest_errors_attempt(db: asyncpg.Pool, job_id: str) -> int:
    attempt: int | None = await db.fetchval(
        "SELECT max(attempt) FROM job_runs WHERE job_id = $1"
        " AND status IN ('running', 'completed', 'failed', 'cancelled')",
        job_id,
    )
    return attempt or 0
