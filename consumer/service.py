"""The consumer process: consume run requests, claim, ack, run the ETL; sweep; stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from consumer import etl, runs, sweeper
from consumer.runs import ClaimedRun, ClaimOutcome
from service.bus import Names, connect, declare_topology
from service.contracts import RunRequest
from service.db import create_pool, ensure_database
from service.listener import JobWatcher
from service.logs import get_logger
from service.migrate import migrate
from service.outbox import OutboxRelay
from service.s3 import s3_client
from service.settings import Settings

log = get_logger(__name__)
HEARTBEAT_SECONDS = 2.0


class DeadLetter(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_request(body: bytes) -> RunRequest:
    try:
        req = msgspec.json.decode(body, type=RunRequest)
    except msgspec.ValidationError as exc:
        raise DeadLetter(
            "INVALID_MESSAGE", f"The run request does not fit the schema: {exc}"
        ) from None
    except msgspec.DecodeError as exc:
        raise DeadLetter("INVALID_JSON", f"The run request is not valid JSON: {exc}") from None
    if req.job_id is None and req.feed_id is None:
        raise DeadLetter("INVALID_MESSAGE", "The run request names neither job_id nor feed_id")
    return req


class Consumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.amqp_prefix)
        self.slots = asyncio.Semaphore(settings.consumer_concurrency)
        self.active: dict[asyncio.Task[None], ClaimedRun] = {}
        self.stopping = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._queue: AbstractQueue | None = None
        self._dlx: AbstractExchange | None = None
        self._tag: str | None = None
        self._background: list[asyncio.Task[None]] = []
        self.deps: etl.Deps | None = None

    async def start(self) -> None:
        s = self.settings
        await ensure_database(s.database_url)
        pool = await create_pool(
            s.database_url, max_size=s.consumer_concurrency * 3 + 3, retries=s.connect_retries
        )
        self._stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn)
        s3 = await self._stack.enter_async_context(s3_client(s))
        self.deps = etl.Deps(settings=s, pool=pool, s3=s3)
        connection = await connect(s.amqp_url, retries=s.connect_retries)
        self._stack.push_async_callback(connection.close)
        channel: AbstractChannel = await connection.channel()
        await channel.set_qos(prefetch_count=s.consumer_concurrency)
        topo = await declare_topology(channel, self.names)
        self._queue = topo["run_queue"]
        publish_channel = await connection.channel(publisher_confirms=True)
        self._dlx = await publish_channel.get_exchange(self.names.dlx)
        # Status events are written by this process too: relay them without a gateway.
        relay = OutboxRelay(pool, s.amqp_url, self.names, poll_seconds=s.outbox_poll_seconds)
        watcher = JobWatcher(s.database_url)
        watcher.on("outbox", relay.wake)
        self._background += [
            asyncio.create_task(relay.run(), name="outbox_relay"),
            asyncio.create_task(watcher.run(), name="listener"),
            asyncio.create_task(self._sweep_forever(), name="sweeper"),
        ]
        for task in self._background:
            task.add_done_callback(self._background_died)
        self._tag = await self._queue.consume(self._on_message)
        log.info("consumer_started", queue=self.names.run_queue, concurrency=s.consumer_concurrency)

    def _background_died(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        log.error("background_task_died", task=task.get_name(), error=repr(task.exception()))
        self.stopping.set()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with self.slots:
            if self.stopping.is_set():
                await message.nack(requeue=True)
                return
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        assert self.deps is not None
        try:
            req = decode_request(message.body)
            async with self.deps.pool.acquire() as conn:
                outcome, run = await runs.claim(conn, req, self.settings.lease_seconds)
            if outcome in (ClaimOutcome.UNKNOWN, ClaimOutcome.NOT_RUNNABLE):
                what = f"job {req.job_id}" if req.job_id else f"feed {req.feed_id}"
                if outcome is ClaimOutcome.UNKNOWN:
                    raise DeadLetter(
                        "UNKNOWN_JOB" if req.job_id else "UNKNOWN_FEED",
                        f"No validation job for {what}",
                    )
                raise DeadLetter("JOB_NOT_RUNNABLE", f"Only validation jobs can be run ({what})")
        except DeadLetter as exc:
            await self._dead_letter(message, exc)
            return
        await message.ack()
        if run is None:
            log.info(
                "run_request_ignored",
                job_id=req.job_id,
                feed_id=req.feed_id,
                attempt=req.attempt,
                reason=outcome.value,
            )
            return
        task = asyncio.current_task()
        assert task is not None
        self.active[task] = run
        try:
            await self._run_with_heartbeat(run)
        finally:
            self.active.pop(task, None)

    async def _run_with_heartbeat(self, run: ClaimedRun) -> None:
        assert self.deps is not None
        work = asyncio.create_task(etl.execute(self.deps, run), name=f"etl-{run.job_id}")
        cancelled_for: str | None = None
        while not work.done():
            done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS)
            if done:
                break
            try:
                state = await runs.renew_lease(self.deps.pool, run, self.settings.lease_seconds)
            except (OSError, Exception) as exc:  # keep trying: the lease still has time
                log.warning("lease_renewal_failed", job_id=run.job_id, error=repr(exc))
                continue
            if state is None and cancelled_for is None:
                cancelled_for = "lease_lost"
                log.warning("run_lease_lost", job_id=run.job_id, attempt=run.attempt)
                work.cancel()
            elif state:
                # A cancel was asked: the ETL notices at its next progress tick; if it is in
                # a long merge, the transaction is rolled back by cancelling the task.
                if cancelled_for is None:
                    cancelled_for = "cancel_requested"
                    await asyncio.sleep(HEARTBEAT_SECONDS)
                    if not work.done():
                        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        if work.cancelled() and cancelled_for == "cancel_requested":
            await runs.finish(
                self.deps.pool,
                run,
                "cancelled",
                message="Cancelled",
                error={
                    "code": "CANCELLED",
                    "message": "Cancelled while running; nothing was written",
                },
            )

    async def _dead_letter(self, message: AbstractIncomingMessage, exc: DeadLetter) -> None:
        assert self._dlx is not None
        headers: dict[str, Any] = dict(message.headers or {})
        headers.update(
            {
                "x-error-code": exc.code,
                "x-error-message": exc.message[:1000],
                "x-original-routing-key": message.routing_key or "",
            }
        )
        await self._dlx.publish(
            aio_pika.Message(
                body=message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="",
        )
        await message.ack()
        log.warning(
            "message_dead_lettered",
            code=exc.code,
            reason=exc.message,
            message_id=message.message_id,
        )

    async def _sweep_forever(self) -> None:
        assert self.deps is not None and self._queue is not None
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                declared = await self._queue.channel.declare_queue(
                    self.names.run_queue, passive=True
                )
                empty = (declared.declaration_result.message_count or 0) == 0
                counts = await sweeper.sweep(
                    self.deps.pool,
                    max_attempts=self.settings.max_attempts,
                    requeue_after=self.settings.requeue_after_seconds,
                    queue_is_empty=empty,
                )
                if any(counts.values()):
                    log.info("sweep_done", **counts)
            except Exception as exc:  # the sweeper must outlive a passing outage
                log.warning("sweep_failed", error=repr(exc))

    async def stop(self) -> None:
        """Stop consuming, let runs finish within the grace period, then abandon the rest
        (rolled back and re-queued at once), and close connections."""
        self.stopping.set()
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self.active:
            log.info(
                "consumer_draining",
                runs=len(self.active),
                grace_s=self.settings.shutdown_grace_seconds,
            )
            _, pending = await asyncio.wait(
                set(self.active), timeout=self.settings.shutdown_grace_seconds
            )
            abandoned = [self.active[t] for t in pending if t in self.active]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            assert self.deps is not None
            for run in abandoned:
                released = await runs.release(self.deps.pool, run)
                log.warning(
                    "run_released", job_id=run.job_id, attempt=run.attempt, requeued=released
                )
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._stack.aclose()
        log.info("consumer_stopped")


async def serve(settings: Settings) -> None:
    consumer = Consumer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.stopping.set)
    await consumer.start()
    await consumer.stopping.wait()
    await consumer.stop()
