"""The sweeper: re-queues runs whose consumer died, and re-publishes lost run requests.

One sweeper at a time across all consumers (advisory lock).
"""

from __future__ import annotations

import asyncpg
import msgspec

from service.core.contracts import EffectiveOptions
from service.core.logs import get_logger
from service.core.store import jobs as jobs_store
from service.core.store import locks, runs
from service.core.store.runs import RunKey

log = get_logger(__name__)
SWEEP_LOCK = 0x7377_6565_70  # "sweep"


async def sweep(
    pool: asyncpg.Pool, *, max_attempts: int, requeue_after: int, queue_is_empty: bool
) -> dict[str, int]:
    counts = {"requeued": 0, "failed": 0, "republished": 0}
    async with pool.acquire() as conn, conn.transaction():
        if not await locks.try_xact_lock(conn, SWEEP_LOCK):
            return counts
        expired = await runs.lock_expired(conn)
        for job in expired:
            run = RunKey(job_id=job["id"], attempt=job["attempt"])
            losses = job["losses"] + 1  # this run request's lost consumers, this one included
            if losses < max_attempts:
                await runs.record_run_failure(
                    conn, run, "WORKER_LOST", "The consumer stopped renewing its lease"
                )
                options = msgspec.json.decode(job["options"], type=EffectiveOptions)
                attempt = await jobs_store.queue_run(
                    conn, job, options, requested_by="sweeper", request_id=None, spend="loss"
                )
                counts["requeued"] += 1
                log.warning(
                    "run_requeued",
                    job_id=run.job_id,
                    attempt=attempt,
                    reason="lease_expired",
                    losses=losses,
                )
            else:
                message = (
                    f"{losses} consumers running this request were lost (the last ran attempt"
                    f" {run.attempt}); {max_attempts} is the limit"
                )
                await runs.finish(
                    conn,
                    run,
                    "failed",
                    message=message,
                    error={
                        "code": "WORKER_LOST",
                        "message": message,
                        "details": {"losses": losses, "attempt": run.attempt},
                    },
                )
                counts["failed"] += 1
                log.error("run_failed", job_id=run.job_id, code="WORKER_LOST", attempt=run.attempt)
        if queue_is_empty:
            # Queued runs with no message left in the queue: their request was lost.
            stale = await runs.lock_lost_requests(conn, requeue_after)
            for job in stale:
                await jobs_store.enqueue_run_message(conn, job["id"], job["attempt"], None)
                await runs.touch_queued(conn, job["id"])
                counts["republished"] += 1
                log.warning("run_republished", job_id=job["id"], attempt=job["attempt"])
    return counts
