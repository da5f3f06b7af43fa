"""Feeds that follow S3: who watches a bucket, and each (feed, key)'s newest event."""

from __future__ import annotations

import asyncpg
import msgspec

from service.core.store.rows import RunTarget, many


class Watcher(msgspec.Struct, frozen=True):
    id: str  # the feed
    watch: str  # its s3://bucket/prefix/


async def watching(conn: asyncpg.Connection, bucket: str) -> list[Watcher]:
    """The feeds that watch a prefix of ``bucket``."""
    rows = await conn.fetch(
        "SELECT id, watch FROM feeds WHERE watch LIKE $1",
        "s3://" + bucket.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%",
    )
    return many(Watcher, rows)


async def newest_seen(conn: asyncpg.Connection, feed_id: str, key: str) -> str | None:
    """The sequencer of the newest event taken for this (feed, key), locking it."""
    seen: str | None = await conn.fetchval(
        "SELECT sequencer FROM feed_object_versions WHERE feed_id = $1 AND key = $2 FOR UPDATE",
        feed_id,
        key,
    )
    return seen


async def record(
    conn: asyncpg.Connection,
    feed_id: str,
    key: str,
    sequencer: str,
    etag: str | None,
    size: int | None,
) -> None:
    await conn.execute(
        "INSERT INTO feed_object_versions (feed_id, key, sequencer, etag, size)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (feed_id, key) DO UPDATE SET"
        " sequencer = EXCLUDED.sequencer, etag = EXCLUDED.etag, size = EXCLUDED.size,"
        " seen_at = now()",
        feed_id,
        key,
        sequencer,
        etag,
        size,
    )


async def initial_submission(conn: asyncpg.Connection, feed_id: str) -> str | None:
    """The submission job a watched feed was created with, while no file has come yet."""
    job_id: str | None = await conn.fetchval(
        "SELECT j.id FROM jobs j JOIN feeds f ON f.submission_job_id = j.id"
        " WHERE f.id = $1 AND j.status = 'created'",
        feed_id,
    )
    return job_id


async def mark_run_pending(conn: asyncpg.Connection, feed_id: str, pending: bool) -> None:
    await conn.execute("UPDATE feeds SET run_pending = $2 WHERE id = $1", feed_id, pending)


async def clear_run_pending(conn: asyncpg.Connection, feed_ids: list[str]) -> None:
    if feed_ids:
        await conn.execute(
            "UPDATE feeds SET run_pending = false WHERE id = ANY($1::text[])", feed_ids
        )


class PendingRun(RunTarget, frozen=True):
    """A feed whose newest version waits for a run (its job was busy when it came)."""


async def pending_runs(conn: asyncpg.Connection, limit: int) -> list[PendingRun]:
    """Feeds whose newest version came while their job was busy, now idle: locked. (The
    candidates of lifecycle.may_run's rule, as a query; queue_runs' guarded SQL decides.)"""
    rows = await conn.fetch(
        "SELECT f.id AS feed_id, f.mode, f.delimiter, f.max_rejected_rows, f.max_deleted_ratio,"
        " f.encoding, f.column_map::text AS column_map, f.unknown_columns,"
        " j.id, j.attempt, j.status FROM feeds f JOIN jobs j ON j.id = f.validation_job_id"
        " WHERE f.run_pending AND f.status = 'ready' AND j.status NOT IN ('queued', 'running')"
        " LIMIT $1 FOR UPDATE OF f, j SKIP LOCKED",
        limit,
    )
    return many(PendingRun, rows)
