"""The sweeper: re-queues runs whose consumer died, and re-publishes lost run requests.

One sweeper at a time across all consumers (advisory lock).
"""

from __future__ import annotations

import asyncpg

from service.core.logs import get_logger
from service.core.store import lifecycle, locks, runs

log = get_logger(__name__)
SWEEP_LOCK = 0x7377_6565_70  # "sweep"


async def sweep(
    pool: asyncpg.Pool,
    *,
    max_attempts: int,
    requeue_after: int,
    queue_is_empty: bool,
    upload_deadline: float = 3600.0,
) -> dict[str, int]:
    counts = {"requeued": 0, "failed": 0, "cancelled": 0, "republished": 0, "uploads_failed": 0}
    async with pool.acquire() as conn, conn.transaction():
        if not await locks.try_xact_lock(conn, SWEEP_LOCK):
            return counts
        for job_id, feed_id in await lifecycle.expire_uploads(conn, upload_deadline):
            counts["uploads_failed"] += 1
            log.warning("upload_lost", job_id=job_id, feed_id=feed_id, code="UPLOAD_FAILED")
        for job in await runs.lock_expired(conn):
            outcome, attempt = await lifecycle.expire(conn, job, max_attempts=max_attempts)
            counts[outcome] += 1
            if outcome == "requeued":
                log.warning(
                    "run_requeued",
                    job_id=job.id,
                    attempt=attempt,
                    reason="lease_expired",
                    losses=job.losses + 1,
                )
            elif outcome == "cancelled":
                log.info("run_cancelled", job_id=job.id, attempt=attempt, reason="lease_expired")
            else:
                log.error("run_failed", job_id=job.id, code="WORKER_LOST", attempt=attempt)
        if queue_is_empty:
            # Queued runs with no message left in the queue: their request was lost.
            for job in await runs.lock_lost_requests(conn, requeue_after):
                await runs.republish(conn, job)
                counts["republished"] += 1
                log.warning("run_republished", job_id=job.id, attempt=job.attempt)
    return counts
