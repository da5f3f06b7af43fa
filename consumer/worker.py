"""The consumer process: consume run requests and S3 events, claim, ack, hand each run to
``runner.py``; sweep; stop gracefully. Message decoding and dead letters: ``messages.py``.

Faults: the AMQP session is reopened with backoff whenever the broker drops it; runs already
claimed go on meanwhile (they are owned by this object, not by the AMQP channel). Every
message is acked, or dead-lettered with ``x-error-code``/``x-error-message``, whatever its
bytes; a PostgreSQL outage while claiming holds the message until the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal

import msgspec
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue

from consumer import etl, messages, metrics, retention, s3watch, sweeper
from consumer.messages import DeadLetter, Stopping, correlation_id, decode_request, settle_quietly
from consumer.runner import Runner
from consumer.scheduler import Scheduler
from consumer.webhooks import Deliverer
from service.core import s3_events
from service.core.bus import Names, declare_topology, open_connection
from service.core.contracts import RunRequest
from service.core.db import create_pool
from service.core.listener import JobWatcher
from service.core.logs import get_logger
from service.core.migrate import migrate
from service.core.outbox import OutboxRelay
from service.core.retry import is_transient, raise_if_cancelling, retry_forever, retry_transient
from service.core.s3 import s3_client
from service.core.settings import Settings
from service.core.store import lifecycle
from service.core.store.runs import ClaimedRun, ClaimOutcome

log = get_logger(__name__)
FIRST_SESSION_TIMEOUT = 30.0


class Consumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.amqp_prefix)
        self.slots = asyncio.Semaphore(settings.consumer_concurrency)
        self.active: dict[asyncio.Task[None], ClaimedRun] = {}
        self.stopping = asyncio.Event()
        self.consuming = asyncio.Event()  # an AMQP session is up and consuming
        self._stack = contextlib.AsyncExitStack()
        self._queue: AbstractQueue | None = None
        self._dlx: AbstractExchange | None = None
        self._background: list[asyncio.Task[None]] = []
        self._intake: set[asyncio.Task[None]] = set()  # messages being settled
        self._waiting: set[asyncio.Task[None]] = set()  # ... of which waiting for a slot
        self.deps: etl.Deps | None = None
        self.metrics = metrics.ConsumerMetrics()
        self.scheduler = Scheduler(
            settings.database_url,
            settings.scheduler_tick_seconds,
            maintenance_every=settings.retention_interval_seconds,
        )

    async def start(self) -> None:
        s = self.settings
        pool = await create_pool(
            s.database_url, max_size=s.consumer_concurrency * 3 + 3, retries=s.connect_retries
        )
        self._stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn)
        s3 = await self._stack.enter_async_context(s3_client(s))
        self.deps = etl.Deps(settings=s, pool=pool, s3=s3, metrics=self.metrics)
        self.runner = Runner(self.deps, self.metrics, self.stopping.is_set)
        self._stack.push_async_callback(self.deps.spawner.close)
        self.deps.spawner.replenish()  # the first run's worker, started ahead
        self.scheduler.maintenance = functools.partial(retention.run_pass, pool, s3, s)
        if s.consumer_metrics_port:
            runner = await metrics.serve(
                self.metrics, s.http_host, s.consumer_metrics_port, self.consuming.is_set
            )
            if runner is not None:
                self._stack.push_async_callback(runner.cleanup)
        # Status events are written by this process too: relay them without a gateway.
        relay = OutboxRelay(pool, s.amqp_url, self.names, poll_seconds=s.outbox_poll_seconds)
        watcher = JobWatcher(s.database_url)
        watcher.on("outbox", relay.wake)
        deliverer = Deliverer(pool, s, self.metrics)
        self._stack.push_async_callback(deliverer.close)
        self._background += [
            asyncio.create_task(retry_forever("consumer_amqp", self._session), name="amqp"),
            asyncio.create_task(relay.run(), name="outbox_relay"),
            asyncio.create_task(watcher.run(), name="listener"),
            asyncio.create_task(self._sweep_forever(), name="sweeper"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
            asyncio.create_task(retry_forever("webhooks", deliverer.run), name="webhooks"),
        ]
        for task in self._background:
            task.add_done_callback(self._background_died)
        try:
            await asyncio.wait_for(self.consuming.wait(), FIRST_SESSION_TIMEOUT)
        except TimeoutError:
            log.warning("consumer_waiting_for_broker", waited_s=FIRST_SESSION_TIMEOUT)
        log.info("consumer_started", queue=self.names.run_queue, concurrency=s.consumer_concurrency)

    def _background_died(self, task: asyncio.Task[None]) -> None:
        # retry_forever never returns: only a bug in the loop itself gets here.
        if task.cancelled() or self.stopping.is_set():
            return
        log.error("background_task_died", task=task.get_name(), error=repr(task.exception()))
        self.stopping.set()

    async def _session(self) -> None:
        """One AMQP session: topology, consume, until the connection drops."""
        connection, lost = await open_connection(self.settings.amqp_url, "feedjobs consumer")
        try:
            channel = await connection.channel()
            topo = await declare_topology(channel, self.names)  # may reopen the channel
            await channel.set_qos(prefetch_count=self.settings.consumer_concurrency)
            publish_channel = await connection.channel(publisher_confirms=True)
            self._dlx = await publish_channel.get_exchange(self.names.dlx)
            self._queue = topo["run_queue"]
            await self._queue.consume(self._on_message)
            # S3 events one at a time, in the order the queue holds them: two versions of a
            # key taken at once could otherwise be taken newest first (the older one would
            # then queue a run, and the newer wait behind it as a pending run).
            events_channel = await connection.channel()
            await events_channel.set_qos(prefetch_count=1)
            events = await events_channel.get_queue(self.names.s3_queue)
            await events.consume(self._on_s3_event)
            self.consuming.set()
            self.metrics.amqp_up.set(1)
            log.info("consumer_connected", queue=self.names.run_queue)
            await lost.wait()
            log.warning("consumer_connection_lost")
        finally:
            self.consuming.clear()
            self.metrics.amqp_up.set(0)
            self._queue = None
            self._dlx = None
            await connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """aio-pika's task for one delivery, which a dropped channel cancels: the work is
        done by a task of this consumer's, so a claim is never cut off halfway."""
        task = asyncio.create_task(self._take(message), name="take-message")
        self._intake.add(task)
        task.add_done_callback(self._intake.discard)
        await asyncio.shield(task)

    async def _on_s3_event(self, message: AbstractIncomingMessage) -> None:
        """An S3 object event: load the new version into the feeds that watch it. Events
        for keys nobody watches are acked (and counted); malformed ones dead-lettered."""
        assert self.deps is not None
        try:
            event = msgspec.json.decode(message.body, type=s3_events.S3Event)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            await self._dead_letter(message, DeadLetter("INVALID_EVENT", f"Not an S3 event: {exc}"))
            return
        except RecursionError:
            await self._dead_letter(message, DeadLetter("INVALID_EVENT", "Nested too deeply"))
            return
        pool = self.deps.pool
        try:
            counts = await retry_transient(
                "s3_event_waiting_for_database",
                lambda: s3watch.take(pool, event),
                give_up=self.stopping.is_set,
            )
        except Exception as exc:
            log.exception("s3_event_failed", message_id=message.message_id)
            await self._dead_letter(
                message, DeadLetter("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
            )
            return
        for outcome, n in counts.items():
            if n:
                self.metrics.s3_events.labels(outcome).inc(n)
        await settle_quietly(message.ack(), message, "ack")

    async def _take(self, message: AbstractIncomingMessage) -> None:
        """Wait for a free slot, settle the message, start the run it claims (if any)."""
        current = asyncio.current_task()
        assert current is not None
        self._waiting.add(current)
        try:
            await self.slots.acquire()
        finally:
            self._waiting.discard(current)
        handed_over = False
        try:
            run = await self._settle(message)
            if run is not None:
                task = asyncio.create_task(self.runner.run(run), name=f"run-{run.job_id}")
                self.active[task] = run
                task.add_done_callback(self._run_done)
                handed_over = True
        finally:
            if not handed_over:
                self.slots.release()

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self.active.pop(task, None)
        self.slots.release()

    async def _settle(self, message: AbstractIncomingMessage) -> ClaimedRun | None:
        """Ack, dead-letter or hand back one message; the claimed run, if any."""
        # Every line about this message (and the run it starts: its task inherits this
        # context) names the message; an upstream request without a request_id is known by
        # its correlation or message id, as an HTTP request is by x-request-id.
        structlog.contextvars.bind_contextvars(message_id=message.message_id)
        try:
            req = decode_request(message.body)
            if req.request_id is None:
                req.request_id = correlation_id(message)
            structlog.contextvars.bind_contextvars(
                request_id=req.request_id, job_id=req.job_id, feed_id=req.feed_id
            )
            outcome, run = await self._claim(req)
            if run is not None:  # the run's task inherits these: every line of it names them
                structlog.contextvars.bind_contextvars(feed_id=run.feed_id, attempt=run.attempt)
            what = f"job {req.job_id}" if req.job_id else f"feed {req.feed_id}"
            if outcome is ClaimOutcome.UNKNOWN:
                raise DeadLetter(
                    "UNKNOWN_JOB" if req.job_id else "UNKNOWN_FEED",
                    f"No validation job for {what}",
                )
            if outcome is ClaimOutcome.NOT_RUNNABLE:
                raise DeadLetter("JOB_NOT_RUNNABLE", f"Only validation jobs can be run ({what})")
            if outcome is ClaimOutcome.NOT_READY:
                raise DeadLetter(
                    "FEED_NOT_READY", f"The feed of {what} has no stored file (upload failed)"
                )
        except DeadLetter as exc:
            await self._dead_letter(message, exc)
            return None
        except Stopping:
            await settle_quietly(message.nack(requeue=True), message, "nack")
            return None
        except Exception as exc:
            log.exception("message_handling_failed", message_id=message.message_id)
            await self._dead_letter(
                message,
                DeadLetter("INTERNAL_ERROR", f"Handling failed: {type(exc).__name__}: {exc}"),
            )
            return None
        await settle_quietly(message.ack(), message, "ack")  # redelivered: a no-op then
        if run is None:
            log.info(
                "run_request_ignored",
                job_id=req.job_id,
                feed_id=req.feed_id,
                attempt=req.attempt,
                reason=outcome.value,
                message_id=message.message_id,
            )
        return run

    async def _claim(self, req: RunRequest) -> tuple[ClaimOutcome, ClaimedRun | None]:
        """Claim in PostgreSQL, waiting out an outage (the message stays unacked)."""
        assert self.deps is not None
        pool, lease = self.deps.pool, self.settings.lease_seconds

        async def claim() -> tuple[ClaimOutcome, ClaimedRun | None]:
            async with pool.acquire() as conn:
                return await lifecycle.claim(conn, req, lease)

        if self.stopping.is_set():
            raise Stopping()
        try:
            return await retry_transient(
                "claim_waiting_for_database", claim, give_up=self.stopping.is_set
            )
        except Exception as exc:
            if self.stopping.is_set() and is_transient(exc):
                raise Stopping() from exc
            raise

    async def _dead_letter(self, message: AbstractIncomingMessage, exc: DeadLetter) -> None:
        await messages.dead_letter(self._dlx, message, exc, self.metrics)

    async def _sweep_forever(self) -> None:
        assert self.deps is not None
        deps = self.deps

        async def step() -> None:
            while True:
                raise_if_cancelling()
                await asyncio.sleep(self.settings.sweep_interval_seconds)
                counts = await sweeper.sweep(
                    deps.pool,
                    max_attempts=self.settings.max_attempts,
                    requeue_after=self.settings.requeue_after_seconds,
                    queue_is_empty=await self._queue_is_empty(),
                    upload_deadline=self.settings.upload_deadline_seconds,
                )
                if any(counts.values()):
                    log.info("sweep_done", **counts)

        await retry_forever("sweeper", step)

    async def _queue_is_empty(self) -> bool:
        """Whether the run queue is empty; False when it cannot be told (broker away)."""
        queue = self._queue
        if queue is None:
            return False
        try:
            declared = await queue.channel.declare_queue(self.names.run_queue, passive=True)
        except Exception as exc:
            log.warning("queue_depth_unknown", error=repr(exc))
            return False
        return (declared.declaration_result.message_count or 0) == 0

    async def stop(self) -> None:
        """Stop consuming, let runs finish within the grace period, then abandon the rest
        (rolled back and re-queued at once), and close connections."""
        self.stopping.set()
        amqp = [t for t in self._background if t.get_name() == "amqp"]
        for task in amqp:  # closing the session stops deliveries; unacked ones go back
            task.cancel()
        await asyncio.gather(*amqp, return_exceptions=True)
        for task in self._waiting:  # messages that never got a slot: nothing was claimed
            task.cancel()
        await asyncio.gather(*self._intake, return_exceptions=True)
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
            for run in abandoned:
                await self.runner.release(run, "shutdown")
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._stack.aclose()
        log.info("consumer_stopped")


async def serve(settings: Settings) -> None:
    consumer = Consumer(settings)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, consumer.stopping.set)
    try:
        await consumer.start()
        await consumer.stopping.wait()
    finally:
        await consumer.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
