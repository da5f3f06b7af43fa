"""Retention, run by the active scheduler: rejections and run history of runs finished more
than RETENTION_DAYS ago, the change lists of runs that committed before then, webhook
deliveries that ended and were made before then, and uploaded file versions beyond the
newest KEEP_FILE_VERSIONS of each feed. Small batches, each its own short transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import botocore.exceptions

from service.core.logs import get_logger
from service.core.s3 import parse_s3_uri
from service.core.settings import Settings
from service.core.store import changes
from service.core.store import retention as store

log = get_logger(__name__)
BATCH = 1000


async def run_pass(
    pool: asyncpg.Pool, s3: Any, settings: Settings, now: datetime | None = None
) -> dict[str, int]:
    """One pass; how many rejections, changes, runs, deliveries and files went."""
    before = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    counts = {"rejections": 0, "runs": 0, "deliveries": 0, "changes": 0, "files": 0}
    for kind, step in (
        ("rejections", store.delete_old_rejections),
        ("changes", changes.delete_old_changes),
        ("runs", store.delete_old_runs),
        ("deliveries", store.delete_old_deliveries),
    ):
        while True:
            async with pool.acquire() as conn:
                gone = await step(conn, before, BATCH)
            counts[kind] += gone
            if gone < BATCH:
                break
    async with pool.acquire() as conn:
        surplus = await store.surplus_files(conn, settings.keep_file_versions, BATCH)
    for row in surplus:
        uri = parse_s3_uri(row.s3_uri)
        try:
            await s3.delete_object(Bucket=uri.bucket, Key=uri.key)
        except botocore.exceptions.ClientError as exc:
            log.warning("retention_file_not_deleted", job_id=row.job_id, error=str(exc))
            continue
        async with pool.acquire() as conn:
            await store.mark_purged(conn, row.job_id)
        counts["files"] += 1
    if any(counts.values()):
        log.info("retention_done", **counts, before=before.isoformat())
    return counts
