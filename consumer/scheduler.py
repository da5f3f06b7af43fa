"""The scheduler: requests the runs of feeds whose schedule is due.

One scheduler is active at a time across every consumer process: leadership is a
session-level advisory lock on a connection of its own. If the leader's process dies, its
connection closes, PostgreSQL releases the lock, and a standby takes over at its next tick.
Due runs are requested through the same outbox as ``POST /run`` (``requested_by:
schedule``), in the transaction that advances the schedule: a crash can neither lose nor
double one. A due run of a job that is still queued or running is skipped (logged).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import msgspec

from service.core.contracts import RunOptions
from service.core.logs import get_logger
from service.core.retry import raise_if_cancelling, retry_forever
from service.core.schedules import next_run
from service.core.store import jobs as jobs_store
from service.core.store import lifecycle, locks
from service.core.store import schedules as schedules_store
from service.core.store import watch as watch_store
from service.core.store.runs import RunToQueue
from service.core.store.schedules import DueSchedule

log = get_logger(__name__)
SCHEDULER_LOCK = 0x7363_6865_6475  # "schedu"
BATCH = 500


class Scheduler:
    def __init__(self, url: str, tick_seconds: float, maintenance_every: float = 300.0) -> None:
        self.url = url
        self.tick_seconds = tick_seconds
        self.leading = asyncio.Event()
        # Housekeeping the active scheduler also runs (retention), every so often.
        self.maintenance: Callable[[], Awaitable[object]] | None = None
        self.maintenance_every = maintenance_every
        self._maintained = 0.0

    async def run(self) -> None:
        await retry_forever("scheduler", self._session)

    async def _session(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            while not await locks.try_session_lock(conn, SCHEDULER_LOCK):
                await asyncio.sleep(self.tick_seconds)  # standing by
            self.leading.set()
            log.info("scheduler_leading")
            while True:
                raise_if_cancelling()
                while await tick(conn) == BATCH:
                    pass  # a backlog: keep going without waiting
                await self._maintain()
                await asyncio.sleep(self.tick_seconds)
        finally:
            self.leading.clear()
            conn.terminate()  # closing the session releases the lock at once

    async def _maintain(self) -> None:
        if self.maintenance is None or time.monotonic() - self._maintained < self.maintenance_every:
            return
        self._maintained = time.monotonic()
        try:
            await self.maintenance()
        except Exception as exc:  # housekeeping never costs the schedules their leader
            log.warning("maintenance_failed", error=repr(exc)[:500])


async def tick(conn: asyncpg.Connection, now: datetime | None = None) -> int:
    """Request every run due at ``now`` (default: the clock); how many schedules were due."""
    now = now or datetime.now(UTC)
    async with conn.transaction():
        rows = await schedules_store.due(conn, now, BATCH)
        moves, runs = [], []
        for row in rows:
            run = _run_of(row, now)
            if run is not None:
                runs.append(run)
            following = next_run(row.cron, row.every_seconds, row.timezone, now)
            moves.append((row.feed_id, following, now if run is not None else None))
        pending = await watch_store.pending_runs(conn, BATCH)
        await watch_store.clear_run_pending(conn, [w.feed_id for w in pending])
        for waiting in pending:
            runs.append(
                RunToQueue(
                    job_id=waiting.id,
                    attempt=waiting.attempt,
                    options=jobs_store.effective_options(RunOptions(), waiting),
                    requested_by="s3_event",
                    request_id=None,
                )
            )
        if runs:
            await lifecycle.queue_runs(conn, runs)
        if moves:
            await schedules_store.advance(conn, moves)
        if runs:
            log.info("schedules_fired", runs=len(runs), jobs=[r.job_id for r in runs][:20])
    return len(rows)


def _run_of(row: DueSchedule, now: datetime) -> RunToQueue | None:
    """The run a due schedule requests of its (locked) job; None if it is skipped."""
    refusal = lifecycle.may_run("validation", row.status, row.feed_status)
    if refusal is not None:
        reason = "job_active" if refusal is lifecycle.Refusal.ALREADY_ACTIVE else refusal.value
        log.info("schedule_skipped", feed_id=row.feed_id, job_id=row.id, reason=reason)
        return None
    options = jobs_store.effective_options(msgspec.json.decode(row.options, type=RunOptions), row)
    return RunToQueue(
        job_id=row.id,
        attempt=row.attempt,
        options=options,
        requested_by="schedule",
        request_id=f"schedule-{row.feed_id}-{int(now.timestamp())}",
    )
