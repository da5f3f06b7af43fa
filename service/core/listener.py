"""LISTEN on PostgreSQL channels with one dedicated connection, reconnecting when it drops.

``JobWatcher`` wakes long-polling requests when their job changes (channel ``job_changed``);
other channels (``outbox``) get plain callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from service.core.jobcache import JobCache
from service.core.logs import get_logger
from service.core.retry import retry_forever

log = get_logger(__name__)


class JobWatcher:
    def __init__(self, url: str) -> None:
        self.url = url
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._callbacks: dict[str, list[Callable[[], None]]] = {"job_changed": []}
        self.connected = asyncio.Event()
        self.cache = JobCache()  # job rows, dropped on their job_changed notification
        self.closing = False  # shutting down: long polls answer at once

    def on(self, channel: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Wait until ``job_id`` changes; False on timeout (or at once while closing)."""
        if self.closing:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(job_id, set())
        waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(fut)
            if not waiters:
                self._waiters.pop(job_id, None)

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def _wake(self, job_id: str) -> None:
        for fut in self._waiters.get(job_id, ()):
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Shutdown: answer every long poll now (with the job as it is), hold no new one."""
        self.closing = True
        self._wake_all()

    def _wake_all(self) -> None:
        for job_id in list(self._waiters):
            self._wake(job_id)

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == "job_changed":
            self.cache.invalidate(payload)  # first: woken long polls must read the new row
            self._wake(payload)
        for callback in self._callbacks.get(channel, ()):
            callback()

    async def run(self) -> None:
        """Keep a listening connection; on loss, wake everyone (they re-read) and reconnect."""
        await retry_forever("listener", self._session)

    async def _session(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=10)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            for channel in self._callbacks:
                await conn.add_listener(channel, self._notified)
            self.cache.reset(enabled=True)
            self.connected.set()
            log.info("listener_connected", channels=sorted(self._callbacks))
            # Anything that happened while we were away is picked up by a re-read.
            self._wake_all()
            for callback in [c for cbs in self._callbacks.values() for c in cbs]:
                callback()
            await lost.wait()
            log.warning("listener_connection_lost")
        finally:
            self.connected.clear()
            self.cache.reset(enabled=False)  # notifications may be missed meanwhile
            self._wake_all()
            if not conn.is_closed():
                conn.terminate()
