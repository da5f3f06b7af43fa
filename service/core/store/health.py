"""What the operations endpoints read: a liveness ping and the gauges of /metrics."""

from __future__ import annotations

import asyncpg
import msgspec


class Gauges(msgspec.Struct, frozen=True):
    jobs: list[tuple[str, str, int]]  # job type, status, how many
    outbox_backlog: int
    rows_read: int  # rows read by completed runs, all time


async def ping(pool: asyncpg.Pool) -> None:
    await pool.fetchval("SELECT 1")


async def gauges(pool: asyncpg.Pool) -> Gauges:
    jobs = await pool.fetch(
        "SELECT job_type, status, count(*) AS n FROM jobs GROUP BY job_type, status"
    )
    backlog = await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    rows = await pool.fetchval(
        "SELECT coalesce(sum((result->>'rows_read')::bigint), 0) FROM job_runs"
        " WHERE status = 'completed'"
    )
    return Gauges(
        jobs=[(r["job_type"], r["status"], r["n"]) for r in jobs],
        outbox_backlog=backlog,
        rows_read=rows,
    )
