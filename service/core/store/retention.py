"""Retention: what is old enough to go, deleted in small batches (short transactions, so
runs and polls never wait behind it)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from service.core.store.rows import many


async def delete_old_rejections(conn: asyncpg.Connection, before: datetime, batch: int) -> int:
    """Rejections of runs that finished before ``before`` (one batch)."""
    status = await conn.execute(
        "DELETE FROM job_errors WHERE ctid = ANY(ARRAY("
        "  SELECT e.ctid FROM job_errors e JOIN job_runs r"
        "    ON r.job_id = e.job_id AND r.attempt = e.attempt"
        "  WHERE r.finished_at < $1 LIMIT $2))",
        before,
        batch,
    )
    return int(status.split()[-1])


async def delete_old_deliveries(conn: asyncpg.Connection, before: datetime, batch: int) -> int:
    """Webhook deliveries delivered or failed, made before ``before`` (one batch); pending
    ones stay whatever their age."""
    status = await conn.execute(
        "DELETE FROM webhook_deliveries WHERE id = ANY(ARRAY("
        "  SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1"
        "  LIMIT $2))",
        before,
        batch,
    )
    return int(status.split()[-1])


async def delete_old_runs(conn: asyncpg.Connection, before: datetime, batch: int) -> int:
    """Run history that finished before ``before``; each job's latest run stays (it is what
    ``/runs`` and ``/errors`` show first)."""
    status = await conn.execute(
        "DELETE FROM job_runs WHERE ctid = ANY(ARRAY("
        "  SELECT r.ctid FROM job_runs r JOIN jobs j ON j.id = r.job_id"
        "  WHERE r.finished_at < $1 AND r.attempt < j.attempt"
        "  AND NOT EXISTS (SELECT 1 FROM job_errors e"
        "    WHERE e.job_id = r.job_id AND e.attempt = r.attempt)"
        "  LIMIT $2))",
        before,
        batch,
    )
    return int(status.split()[-1])


class SurplusFile(msgspec.Struct, frozen=True):
    job_id: str  # the submission that stored it
    s3_uri: str


async def surplus_files(conn: asyncpg.Connection, keep: int, batch: int) -> list[SurplusFile]:
    """Uploaded file versions beyond the newest ``keep`` of their feed (never the feed's
    current one) whose objects are still there."""
    rows = await conn.fetch(
        "SELECT job_id, s3_uri FROM ("
        "  SELECT j.id AS job_id, j.result->>'s3_uri' AS s3_uri, j.file_purged_at,"
        "    f.submission_job_id,"
        "    row_number() OVER (PARTITION BY j.feed_id ORDER BY j.seq DESC) AS n"
        "  FROM jobs j JOIN feeds f ON f.id = j.feed_id"
        "  WHERE j.job_type = 'submission' AND j.status = 'completed' AND f.source = 'upload'"
        ") v WHERE n > $1 AND file_purged_at IS NULL AND job_id <> submission_job_id"
        " AND s3_uri IS NOT NULL LIMIT $2",
        keep,
        batch,
    )
    return many(SurplusFile, rows)


async def mark_purged(conn: asyncpg.Connection, job_id: str) -> None:
    await conn.execute("UPDATE jobs SET file_purged_at = now() WHERE id = $1", job_id)
