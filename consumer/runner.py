"""One claimed run in the consumer: the ETL under a lease heartbeat, and the run given back
(re-queued) when a dependency cut it off or the consumer stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Literal

from consumer import etl
from consumer.metrics import ConsumerMetrics
from consumer.progress import Activity
from service.core.logs import get_logger
from service.core.retry import is_transient, retry_transient
from service.core.store import lifecycle, runs
from service.core.store.runs import ClaimedRun, Lease, ReleaseReason

log = get_logger(__name__)
HEARTBEAT_SECONDS = 2.0
CUT_OFF_SECONDS = 5.0  # a stopped run's time to end before its backend is terminated


def _forget(task: asyncio.Task[etl.RunEnd]) -> None:
    """Retrieve what a task the runner let go of ended with (no 'never retrieved' noise)."""
    if not task.cancelled():
        task.exception()


class Runner:
    def __init__(
        self, deps: etl.Deps, metrics: ConsumerMetrics, stopping: Callable[[], bool]
    ) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.metrics = metrics
        self.stopping = stopping

    async def run(self, run: ClaimedRun) -> None:
        """Run the ETL with a lease heartbeat; give the run back if a dependency cut it off
        or it stalled."""
        started = time.monotonic()
        self.metrics.active.inc()
        try:
            end = await self._with_heartbeat(run)
        finally:
            self.metrics.active.dec()
        self.metrics.run_ended(end, time.monotonic() - started)
        if end in ("interrupted", "stalled"):
            await self.release(run, "stalled" if end == "stalled" else "interrupted")

    async def _with_heartbeat(self, run: ClaimedRun) -> etl.RunEnd | Literal["stalled"]:
        activity = Activity()
        work = asyncio.create_task(etl.execute(self.deps, run, activity), name=f"etl-{run.job_id}")
        try:
            cancelled_for = await self._heartbeat(run, work, activity)
        except asyncio.CancelledError:  # shutdown: abandon the load (rolled back)
            work.cancel()
            with contextlib.suppress(BaseException):
                await self._cut_off(run, work, activity)
            raise
        if not work.done():
            # Stopped, backend terminated, and still not ended: let it go rather than wait
            # for ever (its writes are fenced by its attempt; the run is given back now).
            log.error("run_task_stuck", job_id=run.job_id, attempt=run.attempt)
            work.add_done_callback(_forget)
            return "stalled"
        try:
            end: etl.RunEnd = await work
        except asyncio.CancelledError:  # cancelled by the heartbeat below
            if cancelled_for == "stalled":
                return "stalled"
            end = "lease_lost" if cancelled_for == "lease_lost" else "cancelled"
        except Exception as exc:  # recording the outcome failed: PostgreSQL went away
            if cancelled_for == "stalled":
                return "stalled"
            if not is_transient(exc):
                log.exception("run_crashed", job_id=run.job_id, attempt=run.attempt)
                return "failed"
            end = "interrupted"
        if work.cancelled() and cancelled_for == "cancel_requested":
            await lifecycle.cancelled(self.deps.pool, run)
        # A run given back (interrupted, stalled) with a cancel asked ends cancelled there.
        return end

    async def _heartbeat(
        self, run: ClaimedRun, work: asyncio.Task[etl.RunEnd], activity: Activity
    ) -> str | None:
        """Renew the lease until ``work`` ends; stop it if the run is lost, a cancel was
        asked (and it does not notice by itself) or it stalled: no chunk of the file, no
        frame of the worker for RUN_STALL_SECONDS while its PostgreSQL backend has nothing
        to do. Returns why it was stopped, if it was."""
        cancelled_for: str | None = None
        while not work.done():
            done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS)
            if done:
                break
            if cancelled_for is not None:
                await self._cut_off(run, work, activity)
                break
            try:
                lease = await lifecycle.renew_lease(
                    self.deps.pool, run, self.settings.lease_seconds
                )
                stalled = await self._stalled(activity)
            except Exception as exc:  # keep trying: the lease still has time
                log.warning("lease_renewal_failed", job_id=run.job_id, error=repr(exc))
                continue
            if work.done():  # it ended while we renewed: a lease it no longer needs
                break
            if lease is Lease.LOST:
                cancelled_for = "lease_lost"
                log.warning("run_lease_lost", job_id=run.job_id, attempt=run.attempt)
                work.cancel()
            elif lease is Lease.CANCEL_ASKED:
                # The ETL notices at its next progress tick; if it is in a long merge (or
                # stuck), the transaction is rolled back by stopping the task.
                cancelled_for = "cancel_requested"
                await asyncio.sleep(HEARTBEAT_SECONDS)
                if not work.done():
                    work.cancel()
            elif stalled:
                cancelled_for = "stalled"
                log.warning(
                    "run_stalled",
                    job_id=run.job_id,
                    attempt=run.attempt,
                    idle_s=round(activity.idle_for(), 1),
                    limit_s=self.settings.run_stall_seconds,
                )
                work.cancel()
        return cancelled_for

    async def _stalled(self, activity: Activity) -> bool:
        if activity.idle_for() < self.settings.run_stall_seconds:
            return False
        pid = activity.backend_pid
        if pid is not None and await runs.backend_busy(self.deps.pool, pid):
            activity.touch()  # a long statement (a merge, a lock wait) is progress
            return False
        return True

    async def _cut_off(
        self, run: ClaimedRun, work: asyncio.Task[etl.RunEnd], activity: Activity
    ) -> None:
        """A stopped run gets CUT_OFF_SECONDS to end; past that, its PostgreSQL backend is
        terminated, which ends any wait on it (asyncpg can wait for ever on a connection
        whose COPY went wrong), and the task is given as long again."""
        done, _ = await asyncio.wait({work}, timeout=CUT_OFF_SECONDS)
        if done:
            return
        pid = activity.backend_pid
        log.warning("run_cut_off", job_id=run.job_id, attempt=run.attempt, backend_pid=pid)
        if pid is not None:
            with contextlib.suppress(Exception):
                await runs.terminate_backend(self.deps.pool, pid)
        work.cancel()
        await asyncio.wait({work}, timeout=CUT_OFF_SECONDS)

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
