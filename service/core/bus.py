"""AMQP topology (declared idempotently by both processes) and publishing."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

DELIVERY_LIMIT = 5


class Names:
    """Every AMQP name, prefixed by AMQP_PREFIX so test runs can share a broker."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.jobs = f"{prefix}jobs"
        self.run_queue = f"{prefix}jobs.run"
        self.dlx = f"{prefix}jobs.dlx"
        self.dead_queue = f"{prefix}jobs.run.dead"
        self.events = f"{prefix}jobs.events"
        self.s3_events = f"{prefix}s3.events"  # where S3/MinIO publish object events
        self.s3_queue = f"{prefix}jobs.s3events"


async def delete_topology(amqp_url: str, prefix: str) -> None:
    """Delete every queue and exchange under ``prefix``, messages included: what tests and
    benchmarks do when they are done with a prefix of their own."""
    names = Names(prefix)
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        for queue in (names.run_queue, names.dead_queue, names.s3_queue):
            await channel.queue_delete(queue)
        for exchange in (names.jobs, names.dlx, names.events, names.s3_events):
            await channel.exchange_delete(exchange)
    finally:
        await conn.close()


async def _work_queue(channel: AbstractChannel, name: str, dlx: str) -> AbstractQueue:
    """A quorum queue consumers work from: redelivered at most DELIVERY_LIMIT times, then
    dead-lettered (a last resort: the consumer settles every message itself)."""
    return await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": dlx,
        },
    )


async def declare_topology(channel: AbstractChannel, names: Names) -> dict[str, Any]:
    jobs = await channel.declare_exchange(names.jobs, aio_pika.ExchangeType.DIRECT, durable=True)
    dlx = await channel.declare_exchange(names.dlx, aio_pika.ExchangeType.FANOUT, durable=True)
    events = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    run_queue = await _work_queue(channel, names.run_queue, names.dlx)
    await run_queue.bind(jobs, routing_key="run")
    dead = await channel.declare_queue(
        names.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key="")
    s3_events = await channel.declare_exchange(
        names.s3_events, aio_pika.ExchangeType.TOPIC, durable=True
    )
    s3_queue = await _work_queue(channel, names.s3_queue, names.dlx)
    await s3_queue.bind(s3_events, routing_key="#")
    return {
        "jobs": jobs,
        "dlx": dlx,
        "events": events,
        "run_queue": run_queue,
        "dead": dead,
        "s3_events": s3_events,
        "s3_queue": s3_queue,
    }


async def open_connection(url: str) -> tuple[AbstractConnection, asyncio.Event]:
    """A plain (not self-healing) AMQP connection and an event set when it closes.

    Reconnecting is the caller's loop (``service.core.retry.retry_forever``): one place decides
    what to redo after a drop (topology, consumers, readiness), instead of aio-pika's robust
    connection restoring channels behind the code's back.
    """
    connection = await aio_pika.connect(url, timeout=10)
    lost = asyncio.Event()
    connection.close_callbacks.add(lambda *_: lost.set())
    return connection, lost


def copy_message(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of a delivered message, with other headers (dead-lettering it,
    replaying it)."""
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
