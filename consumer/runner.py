"""One claimed run in the consumer: the ETL under a lease heartbeat, and the run given back
(re-queued) when a dependency cut it off or the consumer stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from consumer import etl
from consumer.metrics import ConsumerMetrics
from service.core.logs import get_logger
from service.core.retry import is_transient, retry_transient
from service.core.store import lifecycle
from service.core.store.runs import ClaimedRun, Lease, ReleaseReason

log = get_logger(__name__)
HEARTBEAT_SECONDS = 2.0


class Runner:
    def __init__(
        self, deps: etl.Deps, metrics: ConsumerMetrics, stopping: Callable[[], bool]
    ) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.metrics = metrics
        self.stopping = stopping

    async def run(self, run: ClaimedRun) -> None:
        """Run the ETL with a lease heartbeat; give the run back if a dependency cut it off."""
        started = time.monotonic()
        self.metrics.active.inc()
        try:
            end = await self._with_heartbeat(run)
        finally:
            self.metrics.active.dec()
        self.metrics.run_ended(end, time.monotonic() - started)
        if end == "interrupted":
            await self.release(run, "interrupted")

    async def _with_heartbeat(self, run: ClaimedRun) -> etl.RunEnd:
        work = asyncio.create_task(etl.execute(self.deps, run), name=f"etl-{run.job_id}")
        try:
            cancelled_for = await self._heartbeat(run, work)
        except asyncio.CancelledError:  # shutdown: abandon the load (rolled back)
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            raise
        try:
            end: etl.RunEnd = await work
        except asyncio.CancelledError:  # cancelled by the heartbeat below
            end = "lease_lost" if cancelled_for == "lease_lost" else "cancelled"
        except Exception as exc:  # recording the outcome failed: PostgreSQL went away
            if not is_transient(exc):
                log.exception("run_crashed", job_id=run.job_id, attempt=run.attempt)
                return "failed"
            end = "interrupted"
        if work.cancelled() and cancelled_for == "cancel_requested":
            await lifecycle.cancelled(self.deps.pool, run)
        return end

    async def _heartbeat(self, run: ClaimedRun, work: asyncio.Task[etl.RunEnd]) -> str | None:
        """Renew the lease until ``work`` ends; cancel it if the run is lost or a cancel was
        asked (and it does not notice by itself). Returns why it was cancelled, if it was."""
        cancelled_for: str | None = None
        while not work.done():
            done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS)
            if done:
                break
            try:
                lease = await lifecycle.renew_lease(
                    self.deps.pool, run, self.settings.lease_seconds
                )
            except Exception as exc:  # keep trying: the lease still has time
                log.warning("lease_renewal_failed", job_id=run.job_id, error=repr(exc))
                continue
            if lease is Lease.LOST and cancelled_for is None:
                cancelled_for = "lease_lost"
                log.warning("run_lease_lost", job_id=run.job_id, attempt=run.attempt)
                work.cancel()
            elif lease is Lease.CANCEL_ASKED and cancelled_for is None:
                # The ETL notices at its next progress tick; if it is in a long merge, the
                # transaction is rolled back by cancelling the task.
                cancelled_for = "cancel_requested"
                await asyncio.sleep(HEARTBEAT_SECONDS)
                if not work.done():
                    work.cancel()
        return cancelled_for

    async def release(self, run: ClaimedRun, reason: ReleaseReason) -> None:
        """Re-queue a run this consumer cannot finish, as soon as PostgreSQL answers."""
        pool, limit = self.deps.pool, self.settings.max_interruptions
        try:
            outcome = await retry_transient(
                "release_waiting_for_database",
                lambda: lifecycle.release(pool, run, reason, max_interruptions=limit),
                give_up=self.stopping,
            )
        except Exception as exc:
            log.warning("run_release_failed", job_id=run.job_id, error=repr(exc))
            return  # the lease runs out and the sweeper re-queues it
        log.warning(
            "run_released",
            job_id=run.job_id,
            feed_id=run.feed_id,
            attempt=run.attempt,
            reason=reason,
            outcome=outcome,
        )
