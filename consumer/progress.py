"""A run's progress (written to its job every second, where a cancel is also noticed) and
its rejections (written to job_errors in batches, on their own connection)."""

from __future__ import annotations

import math
import time
from typing import Any

import asyncpg

from consumer.issues import Issues
from service.core.contracts import FirstError
from service.core.store import lifecycle, rejections
from service.core.store.runs import ClaimedRun, Lease

PROGRESS_EVERY = 1.0  # seconds
ERROR_FLUSH = 2000


class RunCancelled(Exception):
    pass


class Activity:
    """When a run last moved (its transaction began, a chunk of the file was sent, a frame
    of the worker arrived) and which PostgreSQL backend holds its transaction: the runner's
    heartbeat reads both to tell a run that is slow from one that hangs
    (consumer/runner.py)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.backend_pid: int | None = None

    def touch(self) -> None:
        self.last = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last


class LeaseLost(Exception):
    pass


def count_text(value: int) -> str:
    """A count as run messages write it: ``1,234,567``."""
    return f"{value:,}"


def ms_since(started: float) -> int:
    """Milliseconds since ``started`` (a ``time.monotonic()`` reading)."""
    return round((time.monotonic() - started) * 1000)


class ErrorSink:
    """Writes rejections to job_errors in batches (own connection: kept even if the load
    rolls back, since they tell why) and remembers the first one in file order."""

    def __init__(self, pool: asyncpg.Pool, run: ClaimedRun) -> None:
        self.pool = pool
        self.run = run
        self.pending: list[tuple[Any, ...]] = []
        self.count = 0
        self.first: FirstError | None = None
        self.issues = Issues()  # the rejections rolled up, and the run's warnings

    async def add(self, line: int, column: str | None, code: str, message: str, raw: str) -> None:
        self.count += 1
        self.issues.add("error", code, column, [line], message)
        if self.first is None or line < self.first.line:
            self.first = FirstError(line=line, column=column, code=code, message=message)
        self.pending.append(
            (self.run.job_id, self.run.attempt, self.count, line, column, code, message, raw[:1024])
        )
        if len(self.pending) >= ERROR_FLUSH:
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        records, self.pending = self.pending, []
        await rejections.add(self.pool, records)


class Progress:
    def __init__(
        self,
        pool: asyncpg.Pool,
        run: ClaimedRun,
        bytes_total: int,
        activity: Activity,
    ) -> None:
        self.pool = pool
        self.run = run
        self.activity = activity
        self.bytes_total = bytes_total
        self.bytes_read = 0  # sent to the worker
        self.bytes_parsed = 0  # behind the rows read (the worker says, with each batch)
        self.rows_read = 0
        self.started = time.monotonic()
        self.last = 0.0

    def read(self, size: int) -> None:
        self.bytes_read += size
        self.activity.touch()

    async def tick(self, force: bool = False) -> None:
        self.activity.touch()
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        done = self.bytes_parsed
        pct = round(100.0 * done / self.bytes_total, 1) if self.bytes_total else None
        elapsed = max(now - self.started, 0.001)
        remaining = (self.bytes_total - done) / max(done / elapsed, 1.0)
        retry_after = max(1, min(30, math.ceil(remaining / 2)))
        estimate = (
            f" of ~{count_text(round(self.rows_read * self.bytes_total / done))}"
            if done and self.bytes_total and self.rows_read
            else ""
        )
        message = f"Loading: {count_text(self.rows_read)}{estimate} rows"
        lease = await lifecycle.write_progress(
            self.pool,
            self.run,
            {
                "rows_read": self.rows_read,
                "bytes_read": self.bytes_read,
                "bytes_total": self.bytes_total,
                "percent": pct,
            },
            message,
            retry_after,
        )
        if lease is Lease.LOST:
            raise LeaseLost()
        if lease is Lease.CANCEL_ASKED:
            raise RunCancelled()
