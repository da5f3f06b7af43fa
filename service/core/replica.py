"""Where the gateway's reads go: a hot standby (``DATABASE_READ_URL``) when it is healthy and
has replayed every change a client may have seen, else the primary.

The rule that keeps a client from seeing a job go back in time: the **floor** is the
primary's flushed WAL position after the last change this gateway heard of (every job
change NOTIFYs, sql/0001_init.sql) or read from the primary itself. A read goes to the
standby only once the standby has replayed past the floor: it waits for that at most
``REPLICA_WAIT_SECONDS``, then reads the primary instead. A standby that is down, or
behind the primary for longer than ``MAX_REPLICA_LAG_SECONDS``, is not asked at all.

When the primary is down, reads that would have gone to it are answered by the standby
(writes still fail, 503): clients keep polling and listing through a primary's outage.

A monitor measures both servers once a second (``/readyz`` shows what it saw); a read that
finds its server unreachable marks it down at once and is answered by the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Literal, TypeVar

import asyncpg

from service.core.db import UNREACHABLE
from service.core.logs import get_logger
from service.core.retry import raise_if_cancelling

log = get_logger(__name__)
T = TypeVar("T")

# A server that cannot answer: refused, dropped, or shutting down ...
GONE: tuple[type[BaseException], ...] = (
    *UNREACHABLE,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)
DOWN: tuple[type[BaseException], ...] = (*GONE, TimeoutError)  # ... or not answering in time
PRIMARY_LSN = "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint"
STANDBY_LSN = (
    "SELECT pg_is_in_recovery() AS recovering,"
    " pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replayed"
)
PROBE_SECONDS = 1.0
SAMPLES = 120  # the primary's positions kept, one a probe: lag measurable up to 2 minutes

Source = Literal["primary", "standby"]
# The server this request's reads were sent to (a request is one task: its own context).
_chosen: ContextVar[Source | None] = ContextVar("read_from", default=None)


class Reads:
    def __init__(
        self,
        primary: asyncpg.Pool,
        standby: asyncpg.Pool | None,
        *,
        max_lag_seconds: float,
        wait_seconds: float,
        on_read: Callable[[Source], None] = lambda _source: None,
    ) -> None:
        self.primary = primary
        self.standby = standby
        self.max_lag = max_lag_seconds
        self.wait = wait_seconds
        self.on_read = on_read  # a metrics hook: which server answered
        self.floor = 0  # the primary's WAL position every standby read must be past
        self.replayed = 0  # the standby's replay position, as last seen
        self.primary_up = True
        self.standby_up = standby is not None
        self.lag_seconds = 0.0
        self._changes = 0  # changes heard of (NOTIFY, primary reads) ...
        self._covered = 0  # ... of which the floor covers this many
        self._refreshing: asyncio.Task[None] | None = None
        self._probing: asyncio.Task[None] | None = None
        self._samples: list[tuple[float, int]] = []  # (monotonic time, primary position)

    # -- what callers use -------------------------------------------------------------------

    def changed(self) -> None:
        """A change may have committed on the primary (a NOTIFY, a read of the primary): the
        next standby read first learns the primary's position."""
        self._changes += 1

    async def primary_first(self, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """``work`` on the primary (what must be current: a job's poll, a key), or on the
        standby while the primary is unreachable."""
        if self.primary_up or self.standby is None or not self.standby_up:
            try:
                return await work(self.primary)
            except DOWN as exc:
                if self.standby is None:
                    raise
                self._mark("primary", up=False, error=exc)
        assert self.standby is not None
        return await work(self.standby)

    def wrote(self) -> None:
        """A write went through: the primary is up (polls go back to it at once, without
        waiting for the monitor's next look)."""
        if not self.primary_up:
            self._mark("primary", up=True)
        self.changed()

    def poke(self) -> None:
        """A request found a server unreachable: measure both again now, not in a second."""
        if self.standby is not None and (self._probing is None or self._probing.done()):
            self._probing = asyncio.create_task(self.probe())

    async def pool(self) -> asyncpg.Pool:
        """The pool to read a page or a whole download from (a server lost half-way is a
        503 for that request, and ``poke()`` sends the next one to the other)."""
        source = await self.choose()
        _chosen.set(source)
        self.on_read(source)
        return self._pool(source)

    def standby_failed(self, exc: BaseException) -> bool:
        """Whether this request's reads went to the standby, which ``exc`` says is gone: it
        is marked down, and the request can be answered again, by the primary."""
        if _chosen.get() != "standby" or not isinstance(exc, GONE):
            return False
        _chosen.set(None)
        self._mark("standby", up=False, error=exc)
        return True

    async def choose(self) -> Source:
        if self.standby is None or not self.standby_up:
            return "primary"
        if not self.primary_up:
            return "standby"  # the only one answering: stale beats nothing
        if self.lag_seconds > self.max_lag:
            return "primary"
        if self._covered < self._changes:
            await self._refresh_floor()
        if self.replayed >= self.floor:
            return "standby"
        return "standby" if await self._caught_up(time.monotonic() + self.wait) else "primary"

    def status(self) -> dict[str, str]:
        """What ``/readyz`` says of the read path."""
        if self.standby is None:
            return {}
        standby = (
            "down"
            if not self.standby_up
            else f"lagging {self.lag_seconds:.1f} s"
            if self.lag_seconds > self.max_lag
            else "ok"
        )
        reads = (
            "standby"
            if self.standby_up and (not self.primary_up or self.lag_seconds <= self.max_lag)
            else "primary"
        )
        return {"standby": standby, "reads": reads}

    # -- the monitor ------------------------------------------------------------------------

    async def monitor(self) -> None:
        """Forever: both servers' positions, once a second."""
        while True:
            raise_if_cancelling()
            await self.probe()
            await asyncio.sleep(PROBE_SECONDS)

    async def probe(self) -> None:
        now = time.monotonic()
        try:
            async with asyncio.timeout(2):
                position = await self.primary.fetchval(PRIMARY_LSN)
            self._mark("primary", up=True)
            self._samples.append((now, position))
            del self._samples[:-SAMPLES]
        except DOWN as exc:
            self._mark("primary", up=False, error=exc)
        if self.standby is None:
            return
        try:
            async with asyncio.timeout(2):
                row = await self.standby.fetchrow(STANDBY_LSN)
        except DOWN as exc:
            self._mark("standby", up=False, error=exc)
            return
        if not row["recovering"] or row["replayed"] is None:
            # promoted, or not a standby at all: reading it could go back in time
            self._mark("standby", up=False, error=RuntimeError("not in recovery"))
            return
        self._mark("standby", up=True)
        self.replayed = max(self.replayed, row["replayed"])
        self.lag_seconds = self._lag(now)

    def _lag(self, now: float) -> float:
        """How long ago the primary was where the standby is now (0: caught up with the
        latest position the monitor saw)."""
        behind = [t for t, position in self._samples if position > self.replayed]
        return now - behind[0] if behind else 0.0

    # -- internals --------------------------------------------------------------------------

    def _pool(self, source: Source) -> asyncpg.Pool:
        if source == "standby":
            assert self.standby is not None
            return self.standby
        return self.primary

    def _mark(self, source: Source, *, up: bool, error: BaseException | None = None) -> None:
        was = self.primary_up if source == "primary" else self.standby_up
        if source == "primary":
            self.primary_up = up
        else:
            self.standby_up = up
        if was != up:
            if up:
                log.info(f"{source}_reads_back")
            else:
                log.warning(
                    f"{source}_reads_unavailable", error=f"{type(error).__name__}: {error}"[:300]
                )

    async def _refresh_floor(self) -> None:
        """Learn the primary's position now, once for any number of waiting readers."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._read_floor())
        await asyncio.shield(self._refreshing)

    async def _read_floor(self) -> None:
        while self._covered < self._changes:
            target = self._changes
            try:
                async with asyncio.timeout(2):
                    position = await self.primary.fetchval(PRIMARY_LSN)
            except DOWN as exc:
                self._mark("primary", up=False, error=exc)
                return  # no new commit can happen while it is down
            self.floor = max(self.floor, position)
            self._covered = target

    async def _caught_up(self, deadline: float) -> bool:
        """Wait until the standby has replayed past the floor; False at ``deadline``."""
        assert self.standby is not None
        while True:
            try:
                replayed = await self.standby.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"
                )
            except DOWN as exc:
                self._mark("standby", up=False, error=exc)
                return False
            self.replayed = max(self.replayed, replayed or 0)
            if self.replayed >= self.floor:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
