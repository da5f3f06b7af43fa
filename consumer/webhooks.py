"""The webhook deliverer: sends every pending delivery (sql/0013_webhooks.sql) as the
Standard Webhooks specification says (service/core/webhooks.py), at least once.

Each pass takes, per endpoint with something due, up to its free share of
``WEBHOOK_IN_FLIGHT_PER_ENDPOINT`` deliveries (oldest first), leased for an attempt's
timeout plus a margin, and sends each in its own task, at most ``WEBHOOK_CONCURRENCY`` at
once: a slow or dead endpoint holds only its own share, so it never delays another's. An
attempt: connect and total timeouts, no redirect followed, at most ``READ_LIMIT`` bytes of
the answer read. A 2xx delivers; a 410 fails the delivery and disables the endpoint;
anything else (another status, a timeout, a refused connection or address) is retried
after the next delay of ``WEBHOOK_RETRY_SCHEDULE``, and when the schedule is over the
delivery fails and the endpoint is disabled, its reason recorded. A consumer that dies
mid-attempt leaves the delivery leased: due again when the lease ends, same id.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from consumer.metrics import ConsumerMetrics
from service.core import webhooks
from service.core.logs import get_logger
from service.core.retry import TRANSIENT, raise_if_cancelling
from service.core.settings import Settings
from service.core.store import webhooks as store

log = get_logger(__name__)
READ_LIMIT = 4096
LEASE_MARGIN = 5.0
BACKLOG_EVERY = 5.0  # seconds between counts of the pending deliveries (a metric)


class Deliverer:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, metrics: ConsumerMetrics) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.plan = webhooks.schedule(settings.webhook_retry_schedule)
        self.allowed = webhooks.Allowed(settings.webhook_allowed_hosts)
        self.in_flight: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(settings.webhook_concurrency)
        self.lease = settings.webhook_timeout_seconds + LEASE_MARGIN
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            s = self.settings
            connector = aiohttp.TCPConnector(
                resolver=webhooks.GuardedResolver(self.allowed), limit=0, force_close=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=s.webhook_timeout_seconds, sock_connect=s.webhook_connect_timeout_seconds
                ),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        """Passes until cancelled (wrapped in retry_forever by the consumer)."""
        cap = self.settings.webhook_in_flight_per_endpoint
        counted = 0.0
        while True:
            raise_if_cancelling()
            full = [w for w, n in self.in_flight.items() if n >= cap]
            free = self.settings.webhook_concurrency - len(self.tasks)
            claimed = 0
            if free > 0:
                for webhook_id in await store.due_endpoints(self.pool, full, free):
                    share = min(cap - self.in_flight.get(webhook_id, 0), free - claimed)
                    if share <= 0:
                        continue
                    for due in await store.claim(self.pool, webhook_id, share, self.lease):
                        self._start(due)
                        claimed += 1
            if time.monotonic() - counted >= BACKLOG_EVERY:
                counted = time.monotonic()
                self.metrics.webhook_backlog.set(await store.backlog(self.pool))
            if claimed and self.tasks:
                # More may be due: look again as soon as a slot frees (or after a poll).
                await asyncio.wait(
                    set(self.tasks),
                    timeout=self.settings.webhook_poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            else:
                await asyncio.sleep(self.settings.webhook_poll_seconds)

    def _start(self, due: store.Due) -> None:
        self.in_flight[due.webhook_id] = self.in_flight.get(due.webhook_id, 0) + 1
        task = asyncio.create_task(self._deliver(due), name=f"webhook-{due.id}")
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            left = self.in_flight.get(due.webhook_id, 1) - 1
            if left > 0:
                self.in_flight[due.webhook_id] = left
            else:
                self.in_flight.pop(due.webhook_id, None)

        task.add_done_callback(done)

    async def _deliver(self, due: store.Due) -> None:
        async with self.slots:
            started = time.monotonic()
            status, error = await self._attempt(due)
            latency_ms = round((time.monotonic() - started) * 1000)
            self.metrics.webhook_latency.observe(latency_ms / 1000)
            try:
                await self._record(due, status, error, latency_ms)
            except (*TRANSIENT, asyncpg.PostgresError) as exc:
                # The lease runs out and the delivery is sent again: at least once.
                log.warning("webhook_record_failed", delivery_id=due.id, error=str(exc))

    async def _attempt(self, due: store.Due) -> tuple[int | None, str]:
        refused = webhooks.literal_refused(due.url, self.allowed)
        if refused:
            return None, refused
        body = due.body.encode()
        headers = webhooks.headers(due.id, int(time.time()), body, due.secrets)
        try:
            async with self.session().post(
                due.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.content.read(READ_LIMIT)  # the rest is not read
                return resp.status, "" if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except TimeoutError:
            return None, f"no answer within {self.settings.webhook_timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]

    async def _record(
        self, due: store.Due, status: int | None, error: str, latency_ms: int
    ) -> None:
        context = {
            "job_id": due.job_id,
            "webhook_id": due.webhook_id,
            "delivery_id": due.id,
            "attempt": due.attempts,
            "status": status,
            "latency_ms": latency_ms,
        }
        if status is not None and 200 <= status < 300:
            await store.delivered(self.pool, due, status, latency_ms)
            self.metrics.webhook_deliveries.labels("delivered").inc()
            log.info("webhook_delivered", **context)
            return
        disable = None
        delay = webhooks.next_delay(self.plan, due.attempts)
        if status == 410:
            disable, delay = "the endpoint answered 410 Gone", None
        elif delay is None:
            disable = f"every attempt of the retry schedule failed; the last: {error}"
        retry_at = None if delay is None else datetime.now(UTC) + timedelta(seconds=delay)
        await store.attempt_failed(self.pool, due, status, error, latency_ms, retry_at, disable)
        outcome = "retry" if retry_at else "failed"
        self.metrics.webhook_deliveries.labels(outcome).inc()
        log.warning(
            "webhook_attempt_failed",
            **context,
            error=error,
            outcome=outcome,
            retry_in_s=None if delay is None else round(delay, 1),
            disabled=disable,
        )
