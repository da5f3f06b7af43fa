"""Feed schedules: set, remove, read, and the due ones for the scheduler."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from service.core.contracts import RunOptions, ScheduleBody, ScheduleView, encode
from service.core.store.rows import RunTarget, many

VIEW_COLUMNS = (
    "cron, timezone, every_seconds, options::text AS options,"
    " rfc3339(next_run_at) AS next_run_at, rfc3339(last_run_at) AS last_run_at"
)


async def put(
    conn: asyncpg.Connection, feed_id: str, body: ScheduleBody, next_run_at: datetime
) -> None:
    options = RunOptions(
        mode=body.mode,
        max_rejected_rows=body.max_rejected_rows,
        dry_run=body.dry_run,
        force=body.force,
    )
    await conn.execute(
        "INSERT INTO feed_schedules (feed_id, cron, timezone, every_seconds, options, next_run_at)"
        " VALUES ($1, $2, $3, $4, $5::json, $6) ON CONFLICT (feed_id) DO UPDATE SET"
        " cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,"
        " every_seconds = EXCLUDED.every_seconds, options = EXCLUDED.options,"
        " next_run_at = EXCLUDED.next_run_at",
        feed_id,
        body.cron,
        body.timezone,
        body.every_seconds,
        encode(options).decode(),
        next_run_at,
    )


async def delete(conn: asyncpg.Connection | asyncpg.Pool, feed_id: str) -> bool:
    status = await conn.execute("DELETE FROM feed_schedules WHERE feed_id = $1", feed_id)
    return bool(status.endswith(" 1"))


async def get(db: asyncpg.Connection | asyncpg.Pool, feed_id: str) -> ScheduleView | None:
    """The feed's schedule as the API shows it, if it has one."""
    row = await db.fetchrow(
        f"SELECT {VIEW_COLUMNS} FROM feed_schedules WHERE feed_id = $1", feed_id
    )
    if row is None:
        return None
    options = msgspec.json.decode(row["options"], type=RunOptions)
    return ScheduleView(**{**row, "options": options})


class DueSchedule(RunTarget, frozen=True):
    """A due schedule, with its feed's run defaults and its validation job."""

    cron: str | None
    timezone: str
    every_seconds: int | None
    options: str
    next_run_at: datetime
    feed_status: str


async def due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[DueSchedule]:
    """Schedules due at ``now``, oldest first, locked for this transaction (another
    scheduler that somehow runs too skips them), with their feed and validation job."""
    rows = await conn.fetch(
        "SELECT s.feed_id, s.cron, s.timezone, s.every_seconds, s.options::text AS options,"
        " s.next_run_at, f.status AS feed_status, f.mode, f.delimiter, f.max_rejected_rows,"
        " f.max_deleted_ratio, f.encoding, f.column_map::text AS column_map, f.unknown_columns,"
        " j.id, j.attempt, j.status"
        " FROM feed_schedules s JOIN feeds f ON f.id = s.feed_id"
        " JOIN jobs j ON j.id = f.validation_job_id"
        " WHERE s.next_run_at <= $1 ORDER BY s.next_run_at LIMIT $2"
        " FOR UPDATE OF s, j SKIP LOCKED",
        now,
        limit,
    )
    return many(DueSchedule, rows)


async def advance(
    conn: asyncpg.Connection, moves: list[tuple[str, datetime, datetime | None]]
) -> None:
    """Set each (feed, next due time, ran at or None) in one statement."""
    await conn.execute(
        "UPDATE feed_schedules s SET next_run_at = m.next_run_at,"
        " last_run_at = coalesce(m.ran_at, s.last_run_at)"
        " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])"
        "   AS m(feed_id, next_run_at, ran_at) WHERE s.feed_id = m.feed_id",
        [m[0] for m in moves],
        [m[1] for m in moves],
        [m[2] for m in moves],
    )
