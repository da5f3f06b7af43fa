"""Rejections (``job_errors``): written by a run as it finds them, read in file order."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.core.contracts import RowError

COLUMNS = ["job_id", "attempt", "ordinal", "line", "column_name", "code", "message", "raw"]


async def add(db: asyncpg.Pool, rows: list[tuple[Any, ...]]) -> None:
    """Rows of ``COLUMNS``, by COPY, on a connection of their own: they are kept even if
    the load rolls back, since they tell why."""
    async with db.acquire() as conn:
        await conn.copy_records_to_table("job_errors", records=rows, columns=COLUMNS)


def _row_error(r: asyncpg.Record) -> RowError:
    return RowError(r["line"], r["column_name"], r["code"], r["message"], r["raw"])


async def list_errors(
    db: asyncpg.Pool, job_id: str, attempt: int, after: tuple[int, int], limit: int
) -> list[tuple[int, RowError]]:
    """Rejections in file order (by line), after the (line, ordinal) ``after``: each with
    its ordinal (a page's cursor is its last (line, ordinal))."""
    rows = await db.fetch(
        "SELECT ordinal, line, column_name, code, message, raw FROM job_errors"
        " WHERE job_id = $1 AND attempt = $2 AND (line, ordinal) > ($3, $4)"
        " ORDER BY line, ordinal LIMIT $5",
        job_id,
        attempt,
        after[0],
        after[1],
        limit,
    )
    return [(r["ordinal"], _row_error(r)) for r in rows]


async def count_in_ranges(
    db: asyncpg.Pool, job_id: str, attempt: int, ranges: list[tuple[int, int]]
) -> list[int]:
    """The run's rejections whose line lies in each [first, last] range (a part's lines)."""
    if not ranges:
        return []
    rows = await db.fetch(
        "SELECT r.i, count(e.line) AS n FROM unnest($3::int[], $4::int[])"
        " WITH ORDINALITY AS r(first, last, i)"
        " LEFT JOIN job_errors e ON e.job_id = $1 AND e.attempt = $2"
        " AND e.line BETWEEN r.first AND r.last GROUP BY r.i ORDER BY r.i",
        job_id,
        attempt,
        [f for f, _ in ranges],
        [last for _, last in ranges],
    )
    return [int(r["n"]) for r in rows]


async def latest_errors_attempt(db: asyncpg.Pool, job_id: str) -> int:
    attempt: int | None = await db.fetchval(
        "SELECT max(attempt) FROM job_runs WHERE job_id = $1"
        " AND status IN ('running', 'completed', 'failed', 'cancelled')",
        job_id,
    )
    return attempt or 0
