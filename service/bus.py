"""AMQP topology (declared idempotently by both processes) and publishing."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from service.logs import get_logger

log = get_logger(__name__)

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

    def exchange(self, logical: str) -> str:
        return f"{self.prefix}{logical}"


async def declare_topology(channel: AbstractChannel, names: Names) -> dict[str, Any]:
    jobs = await channel.declare_exchange(names.jobs, aio_pika.ExchangeType.DIRECT, durable=True)
    dlx = await channel.declare_exchange(names.dlx, aio_pika.ExchangeType.FANOUT, durable=True)
    events = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    run_queue = await channel.declare_queue(
        names.run_queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": names.dlx,
        },
    )
    await run_queue.bind(jobs, routing_key="run")
    dead = await channel.declare_queue(
        names.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key="")
    return {"jobs": jobs, "dlx": dlx, "events": events, "run_queue": run_queue, "dead": dead}


async def connect(url: str, *, retries: int | None = None) -> AbstractRobustConnection:
    """A robust connection; with ``retries``, bounded and logged retries at start-up."""
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            return await aio_pika.connect_robust(url, timeout=10)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            if retries is not None and attempt >= retries:
                raise
            log.warning("amqp_connect_retry", attempt=attempt, error=str(exc), delay_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
