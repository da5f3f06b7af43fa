"""Reads about runs: the last completed one (file skip), and the sweeper's candidates.

The runs' state changes are in ``lifecycle.py``.
"""

from __future__ import annotations

import asyncpg
import msgspec

from service.core.store import outbox
from service.core.store.rows import JobRow, columns, many


class CompletedRun(msgspec.Struct, frozen=True):
    attempt: int
    options: str | None
    result: str | None
    file_etag: str | None
    file_size: int | None


async def last_completed(db: asyncpg.Pool, job_id: str) -> CompletedRun | None:
    row = await db.fetchrow(
        "SELECT attempt, options::text AS options, result::text AS result, file_etag, file_size"
        " FROM job_runs WHERE job_id = $1 AND status = 'completed'"
        " ORDER BY attempt DESC LIMIT 1",
        job_id,
    )
    return None if row is None else CompletedRun(**row)


# -- the sweeper's (consumer/sweeper.py) ---------------------------------------------------


async def lock_expired(conn: asyncpg.Connection) -> list[JobRow]:
    """Running jobs whose lease ran out (their consumer is gone), locked; others skipped."""
    rows = await conn.fetch(
        f"SELECT {columns(JobRow)} FROM jobs"
        " WHERE status = 'running' AND lease_until < now() FOR UPDATE SKIP LOCKED"
    )
    return many(JobRow, rows)


async def lock_lost_requests(conn: asyncpg.Connection, older_than: int) -> list[JobRow]:
    """Jobs queued for longer than ``older_than`` seconds while no run request is waiting
    in the outbox (the caller knows the broker's queue is empty): their message was lost."""
    rows = await conn.fetch(
        f"SELECT {columns(JobRow)} FROM jobs WHERE status = 'queued'"
        " AND queued_at < now() - make_interval(secs => $1)"
        " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sent_at IS NULL"
        "   AND o.exchange = 'jobs')"
        " FOR UPDATE SKIP LOCKED",
        older_than,
    )
    return many(JobRow, rows)


async def republish(conn: asyncpg.Connection, job: JobRow) -> None:
    """A queued job's run request was lost: it goes into the outbox again, and the job
    waits from now."""
    await outbox.add_run_requests(conn, [(job.id, job.attempt, None)])
    await conn.execute("UPDATE jobs SET queued_at = now() WHERE id = $1", job.id)
