"""The sweeper: re-queues runs whose consumer died, and re-publishes lost run requests.

One sweeper at a time across all consumers (advisory lock).
"""

from __future__ import annotations

import asyncpg
import msgspec

from service.contracts import EffectiveOptions
from service.logs import get_logger
from service.store import jobs as jobs_store

log = get_logger(__name__)
SWEEP_LOCK = 0x7377_6565_70  # "sweep"


async def sweep(
    pool: asyncpg.Pool, *, max_attempts: int, requeue_after: int, queue_is_empty: bool
) -> dict[str, int]:
    counts = {"requeued": 0, "failed": 0, "republished": 0}
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEP_LOCK):
            return counts
        expired = await conn.fetch(
            "SELECT * FROM jobs WHERE status = 'running' AND lease_until < now()"
            " FOR UPDATE SKIP LOCKED"
        )
        for job in expired:
            await conn.execute(
                "UPDATE job_runs SET status = 'failed', finished_at = now(), error = $3::json"
                " WHERE job_id = $1 AND attempt = $2",
                job["id"],
                job["attempt"],
                '{"code": "WORKER_LOST", "message": "The consumer stopped renewing its lease"}',
            )
            if job["attempt"] < max_attempts:
                options = msgspec.json.decode(job["options"], type=EffectiveOptions)
                attempt = await jobs_store.queue_run(
                    conn, job, options, requested_by="sweeper", request_id=None
                )
                counts["requeued"] += 1
                log.warning(
                    "run_requeued", job_id=job["id"], attempt=attempt, reason="lease_expired"
                )
            else:
                message = (
                    f"The consumer running attempt {job['attempt']} was lost, and"
                    f" {max_attempts} attempts is the limit"
                )
                await conn.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = now(), lease_until = NULL,"
                    " progress = NULL, retry_after = NULL, message = $2, error = $3::json"
                    " WHERE id = $1",
                    job["id"],
                    message,
                    msgspec.json.encode(
                        {
                            "code": "WORKER_LOST",
                            "message": message,
                            "details": {"attempts": job["attempt"]},
                        }
                    ).decode(),
                )
                counts["failed"] += 1
                log.error(
                    "run_failed", job_id=job["id"], code="WORKER_LOST", attempt=job["attempt"]
                )
        if queue_is_empty:
            # Queued runs with no message left in the queue: their request was lost.
            stale = await conn.fetch(
                "SELECT id, attempt FROM jobs WHERE status = 'queued'"
                " AND queued_at < now() - make_interval(secs => $1)"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sent_at IS NULL"
                "   AND o.exchange = 'jobs')"
                " FOR UPDATE SKIP LOCKED",
                requeue_after,
            )
            for job in stale:
                await jobs_store.enqueue_run_message(conn, job["id"], job["attempt"], None)
                await conn.execute("UPDATE jobs SET queued_at = now() WHERE id = $1", job["id"])
                counts["republished"] += 1
                log.warning("run_republished", job_id=job["id"], attempt=job["attempt"])
    return counts
