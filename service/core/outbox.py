"""The outbox relay: publishes outbox rows with publisher confirms and marks them sent.

Rows are written in the same transaction as the change they announce (a queued run, a status
change), so nothing is announced that did not happen and nothing that happened goes
unannounced. One relay publishes at a time (advisory lock), which keeps the order of rows.

Faults: a broker that goes away ends the AMQP session, which :func:`retry_forever` opens
again with backoff; a database that goes away only pauses relaying (the AMQP connection
stays open, so nothing reconnects in a loop while PostgreSQL is down).
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import asyncpg
from aio_pika.abc import AbstractConnection, AbstractExchange

from service.core.bus import Names, declare_topology, open_connection
from service.core.logs import get_logger
from service.core.retry import Backoff, is_transient, raise_if_cancelling, retry_forever, wait_any
from service.core.store import locks
from service.core.store import outbox as outbox_store

log = get_logger(__name__)

RELAY_LOCK = 0x6F75_7462_6F78  # "outbox"
BATCH = 200


class BrokerLost(ConnectionError):
    """The AMQP connection closed under the relay: a dependency fault (retry.TRANSIENT),
    logged as a warning with its reason, never as a crash."""


class OutboxRelay:
    def __init__(
        self, pool: asyncpg.Pool, amqp_url: str, names: Names, poll_seconds: float = 5.0
    ) -> None:
        self.pool = pool
        self.amqp_url = amqp_url
        self.names = names
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._exchanges: dict[str, AbstractExchange] = {}
        self._connection: AbstractConnection | None = None

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up right now (``/readyz``)."""
        conn = self._connection
        return conn is not None and conn.connected.is_set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: an AMQP session, reopened with backoff whenever it ends."""
        await retry_forever("outbox_relay", self._session)

    async def _session(self) -> None:
        connection, lost = await open_connection(self.amqp_url, "feedjobs outbox-relay")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            ex = await declare_topology(channel, self.names)
            self._exchanges = {"jobs": ex["jobs"], "jobs.events": ex["events"]}
            self._connection = connection
            log.info("outbox_relay_connected")
            await self._relay_until(lost)
        finally:
            self._connection = None
            await connection.close()

    async def _relay_until(self, lost: asyncio.Event) -> None:
        db_backoff = Backoff()
        while True:
            raise_if_cancelling()
            if lost.is_set():
                raise BrokerLost("the broker connection closed")
            try:
                sent = await self.relay_once()
            except Exception as exc:
                if lost.is_set():
                    raise BrokerLost("the broker connection closed") from exc
                if not is_transient(exc):
                    raise
                # PostgreSQL is away: wait for it on the same AMQP session.
                delay = db_backoff.next()
                log.warning("outbox_relay_db_unavailable", error=repr(exc), delay_s=round(delay, 2))
                await wait_any(lost, timeout=delay)
                continue
            db_backoff.reset()
            if sent == BATCH:
                continue
            if sent is None:
                # Another relay holds the lock, and its snapshot may predate our rows.
                await asyncio.sleep(0.05)
                continue
            self._wake.clear()
            await wait_any(self._wake, lost, timeout=self.poll_seconds)

    async def relay_once(self) -> int | None:
        """Publish one batch of unsent rows; how many were sent (None: another relay is busy)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await locks.try_xact_lock(conn, RELAY_LOCK):
                return None
            rows = await outbox_store.unsent(conn, BATCH)
            if not rows:
                return 0
            started = time.perf_counter()
            for row in rows:
                await self._publish(row)
            await outbox_store.mark_sent(conn, [r.id for r in rows])
        log.debug(
            "outbox_relayed",
            count=len(rows),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return len(rows)

    async def _publish(self, row: outbox_store.Unsent) -> None:
        message = aio_pika.Message(
            body=row.body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=row.message_id,
            headers=row.headers,
        )
        exchange = self._exchanges[row.exchange]
        # Events nobody subscribes to are fine (mandatory off); a run request must land.
        await exchange.publish(
            message, routing_key=row.routing_key, mandatory=row.exchange == "jobs"
        )
