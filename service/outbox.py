"""The outbox relay: publishes outbox rows with publisher confirms and marks them sent.

Rows are written in the same transaction as the change they announce (a queued run, a status
change), so nothing is announced that did not happen and nothing that happened goes
unannounced. One relay publishes at a time (advisory lock), which keeps the order of rows.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import aiormq
import asyncpg
import msgspec
from aio_pika.abc import AbstractExchange

from service.bus import Names, declare_topology
from service.logs import get_logger

log = get_logger(__name__)

RELAY_LOCK = 0x6F75_7462_6F78  # "outbox"
BATCH = 200


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
        self.connected = False
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: connect (with backoff while the broker is away), then relay."""
        delay = 0.5
        while True:
            try:
                connection = await aio_pika.connect_robust(self.amqp_url, timeout=10)
            except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
                log.warning("outbox_relay_waiting_for_broker", error=str(exc), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                ex = await declare_topology(channel, self.names)
                self._exchanges = {"jobs": ex["jobs"], "jobs.events": ex["events"]}
                self.connected = True
                log.info("outbox_relay_connected")
                await self._relay_forever()
            except (
                OSError,
                aiormq.exceptions.AMQPError,
                aio_pika.exceptions.AMQPException,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
            ) as exc:
                log.warning("outbox_relay_interrupted", error=str(exc))
                await asyncio.sleep(delay)
            finally:
                self.connected = False
                await connection.close()

    async def _relay_forever(self) -> None:
        while True:
            sent = await self.relay_once()
            if sent == BATCH:
                continue
            if sent is None:
                # Another relay holds the lock, and its snapshot may predate our rows.
                await asyncio.sleep(0.05)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except TimeoutError:
                pass

    async def relay_once(self) -> int | None:
        """Publish one batch of unsent rows; how many were sent (None: another relay is busy)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK):
                return None
            rows = await conn.fetch(
                "SELECT id, exchange, routing_key, message_id, body, headers::text AS headers"
                " FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
                BATCH,
            )
            if not rows:
                return 0
            started = time.perf_counter()
            for row in rows:
                await self._publish(row)
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        self.published += len(rows)
        log.debug(
            "outbox_relayed",
            count=len(rows),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return len(rows)

    async def _publish(self, row: asyncpg.Record) -> None:
        headers: dict[str, Any] = msgspec.json.decode(row["headers"]) if row["headers"] else {}
        message = aio_pika.Message(
            body=bytes(row["body"]),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=row["message_id"],
            headers=headers,
        )
        exchange = self._exchanges[row["exchange"]]
        # Events nobody subscribes to are fine (mandatory off); a run request must land.
        await exchange.publish(
            message, routing_key=row["routing_key"], mandatory=row["exchange"] == "jobs"
        )
