"""AMQP topology (declared idempotently by both processes) and publishing."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import time
import urllib.parse
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from service.core.logs import get_logger
from service.core.settings import broker_nodes

log = get_logger(__name__)
DELIVERY_LIMIT = 5
CONNECT_TIMEOUT = 10.0  # one node's TCP connect and AMQP handshake


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
    conn = await connect(amqp_url)
    try:
        channel = await conn.channel()
        for queue in (names.run_queue, names.dead_queue, names.s3_queue):
            await channel.queue_delete(queue)
        for exchange in (names.jobs, names.dlx, names.events, names.s3_events):
            await channel.exchange_delete(exchange)
    finally:
        await conn.close()


# A work queue's arguments. At-least-once dead-lettering (RabbitMQ 3.10+, quorum queues)
# keeps a message in its queue until the dead-letter queue has confirmed it, so a node lost
# mid-way loses no dead letter; it needs overflow reject-publish.
WORK_QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DELIVERY_LIMIT,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
# What a work queue declared by a version before at-least-once dead-lettering holds.
LEGACY_ARGUMENT_NAMES = ("x-queue-type", "x-delivery-limit")


async def _work_queue(channel: AbstractChannel, name: str, dlx: str) -> AbstractQueue:
    """A quorum queue consumers work from: redelivered at most DELIVERY_LIMIT times, then
    dead-lettered at least once (a last resort: the consumer settles every message itself).

    A queue declared by an earlier version keeps its arguments (RabbitMQ refuses to change
    them in place): it is used as it is, with a warning naming the policy that upgrades it.
    """
    arguments = {**WORK_QUEUE_ARGUMENTS, "x-dead-letter-exchange": dlx}
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        log.warning(
            "amqp_queue_arguments_outdated",
            queue=name,
            error=str(exc)[:300],
            advice="apply a policy with dead-letter-strategy=at-least-once and "
            "overflow=reject-publish to this queue (docs/operations.md)",
        )
    await channel.reopen()  # the refusal closed the channel
    legacy = {k: arguments[k] for k in (*LEGACY_ARGUMENT_NAMES, "x-dead-letter-exchange")}
    return await channel.declare_queue(name, durable=True, arguments=legacy)


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


def node_label(url: str) -> str:
    """``host:port`` of a node's URL, for logs (never its credentials)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


# When each node was last refused or lost, in this process: such a node is tried after the
# others, so a reconnect after a node's loss goes straight to a live one.
_suspects: dict[str, float] = {}

# A node refusing or dropping the connection, or not answering in CONNECT_TIMEOUT.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
)


def _lost(node: str, _sender: object = None, exc: object = None) -> None:
    # Our own close() passes a bare ConnectionClosed; the server's has a code and a reason.
    if isinstance(exc, aiormq.exceptions.ConnectionClosed) and not exc.args:
        return
    _suspects[node] = time.monotonic()


def _in_order(nodes: list[str]) -> list[str]:
    """Nodes never lost first, in random order (clients spread over the cluster), then
    the lost ones, the longest ago first."""
    fresh = [n for n in nodes if n not in _suspects]
    random.shuffle(fresh)
    return fresh + sorted((n for n in nodes if n in _suspects), key=_suspects.__getitem__)


async def connect(amqp_url: str, name: str = "feedjobs") -> AbstractConnection:
    """A connection to the first node of ``amqp_url`` that answers, named for the broker's
    operators ``<name> <host>:<pid>`` (``rabbitmqctl list_connections client_properties``,
    the management UI). With one node, its own error is raised; with several, a
    ConnectionError naming each node's."""
    nodes = broker_nodes(amqp_url)
    label = f"{name} {socket.gethostname()}:{os.getpid()}"
    errors: list[str] = []
    for node in _in_order(nodes):
        try:
            connection = await aio_pika.connect(
                node, timeout=CONNECT_TIMEOUT, client_properties={"connection_name": label}
            )
        except UNREACHABLE as exc:
            _lost(node, None, exc)
            if len(nodes) == 1:
                raise
            error = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("amqp_node_unreachable", node=node_label(node), error=error, name=name)
            errors.append(f"{node_label(node)}: {error}")
            continue
        _suspects.pop(node, None)
        if len(nodes) > 1:
            log.info("amqp_node_connected", node=node_label(node), nodes=len(nodes), name=name)
        connection.close_callbacks.add(functools.partial(_lost, node))
        return connection
    raise ConnectionError("no broker node answered: " + "; ".join(errors))


async def open_connection(url: str, name: str) -> tuple[AbstractConnection, asyncio.Event]:
    """A plain (not self-healing) AMQP connection to a live node of ``url`` and an event set
    when it closes.

    Reconnecting is the caller's loop (``service.core.retry.retry_forever``): one place decides
    what to redo after a drop (topology, consumers, readiness), instead of aio-pika's robust
    connection restoring channels behind the code's back. Its next connection goes to another
    node first, if ``url`` names several.
    """
    connection = await connect(url, name)
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
