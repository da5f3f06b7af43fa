"""LISTEN on PostgreSQL channels with one dedicated connection, reconnecting when it drops.

``JobWatcher`` wakes long-polling requests when their job changes (channel ``job_changed``);
other channels (``outbox``) get plain callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from service.jobcache import JobCache
from service.logs import get_logger

log = get_logger(__name__)


class JobWatcher:
    def __init__(self, url: str) -> None:
        self.url = url
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._callbacks: dict[str, list[Callable[[], None]]] = {"job_changed": []}
        self._conn: asyncpg.Connection | None = None
        self.connected = asyncio.Event()
        self.cache = JobCache()  # job rows, dropped on their job_changed notification

    def on(self, channel: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Wait until ``job_id`` changes; False on timeout."""
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
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("listener_connect_failed", error=str(exc), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            self._conn = conn
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
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
                log.warning("listener_connection_lost")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listener_connection_lost", error=str(exc))
            finally:
                self.connected.clear()
                self.cache.reset(enabled=False)  # notifications may be missed meanwhile
                self._conn = None
                if not conn.is_closed():
                    await conn.close()
            self._wake_all()
