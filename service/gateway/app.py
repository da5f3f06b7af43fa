"""``create_app(settings)``: the gateway, with one cleanup context per resource."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
from aiohttp import web

from service.core import s3
from service.core.bus import Names
from service.core.db import create_pool
from service.core.listener import JobWatcher
from service.core.logs import get_logger
from service.core.migrate import migrate
from service.core.outbox import OutboxRelay
from service.core.replica import Reads
from service.core.retry import retry_forever, until_reachable
from service.core.s3 import ensure_bucket, s3_client
from service.core.settings import Settings
from service.gateway import (
    appkeys,
    fastpoll,
    protocol,
    routes_changes,
    routes_feeds,
    routes_jobs,
    routes_ops,
    routes_products,
    routes_webhooks,
)
from service.gateway.auth import KeyCache
from service.gateway.jobs_view import BODIES, Bodies
from service.gateway.metrics import METRICS, Metrics
from service.gateway.middleware import authenticate, request_context
from service.gateway.ratelimit import RateLimiter, StreamSlots

log = get_logger(__name__)
BACKGROUND = web.AppKey("background", list)
ON_FATAL = web.AppKey("on_fatal", object)


def _supervise(
    app: web.Application, name: str, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None]:
    """Run a background task for the app's lifetime; if it dies, the process must not limp on."""
    task = asyncio.create_task(coro, name=name)

    def done(t: asyncio.Task[None]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        log.error("background_task_died", task=name, error=repr(exc))
        on_fatal: Callable[[], None] | None = app.get(ON_FATAL)  # type: ignore[assignment]
        if on_fatal is not None:
            on_fatal()

    task.add_done_callback(done)
    app[BACKGROUND].append(task)
    return task


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    pool = await create_pool(
        settings.database_url, max_size=settings.db_pool_max, retries=settings.connect_retries
    )
    async with pool.acquire() as conn:
        await migrate(conn)
    app[appkeys.POOL] = pool
    standby = None
    if settings.database_read_url:  # no connection yet: a standby that is down is fine
        standby = await asyncpg.create_pool(
            settings.database_read_url, min_size=0, max_size=settings.db_pool_max
        )
    reads = Reads(
        pool,
        standby,
        max_lag_seconds=settings.max_replica_lag_seconds,
        wait_seconds=settings.replica_wait_seconds,
        on_read=app[METRICS].count_read,
    )
    app[appkeys.READS] = reads
    app[appkeys.WATCHER].on("job_changed", reads.changed)
    yield
    await pool.close()
    if standby is not None:
        await standby.close()


async def _s3(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    async with s3_client(settings) as client:
        # A gateway started while S3 is away waits for it, as for PostgreSQL.
        await until_reachable(
            "s3",
            lambda: ensure_bucket(client, settings.s3_bucket),
            retries=settings.connect_retries,
            unreachable=s3.UNREACHABLE,
        )
        app[appkeys.S3] = client
        yield


async def _background(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    watcher = app[appkeys.WATCHER]
    relay = OutboxRelay(
        app[appkeys.POOL],
        settings.amqp_url,
        Names(settings.amqp_prefix),
        poll_seconds=settings.outbox_poll_seconds,
    )
    app[appkeys.HEALTH]["relay"] = relay
    watcher.on("outbox", relay.wake)
    _supervise(app, "listener", watcher.run())
    _supervise(app, "outbox_relay", relay.run())
    if app[appkeys.READS].standby is not None:
        _supervise(
            app, "replica_monitor", retry_forever("replica_monitor", app[appkeys.READS].monitor)
        )
    yield
    for task in app[BACKGROUND]:
        task.cancel()
    tasks: list[asyncio.Task[None]] = app[BACKGROUND]
    stuck = (await asyncio.wait(tasks, timeout=5))[1] if tasks else set()
    if stuck:  # never hold a shutdown for a task that ignores its cancellation
        log.error("background_task_stuck", tasks=sorted(t.get_name() for t in stuck))


async def _answer_long_polls(app: web.Application) -> None:
    # A deploy must not wait SHUTDOWN_GRACE_SECONDS for polls that would only time out.
    app[appkeys.WATCHER].close()


def route_tables() -> list[web.RouteTableDef]:
    """Every route of the gateway, by module (also what the OpenAPI document is made of)."""
    return [
        routes_ops.routes,
        routes_feeds.routes,
        routes_products.routes,
        routes_changes.routes,
        routes_webhooks.routes,
        routes_jobs.routes,
    ]


def create_app(settings: Settings) -> web.Application:
    protocol.install()
    app = web.Application(
        middlewares=[request_context, authenticate], client_max_size=settings.max_json_body_bytes
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.WATCHER] = JobWatcher(settings.database_url)
    app[appkeys.KEYS] = KeyCache()
    app[BODIES] = Bodies()
    app[appkeys.LIMITER] = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app[appkeys.STREAMS] = StreamSlots(settings.max_streams_per_tenant)
    app[appkeys.BAD_KEY_LIMITER] = RateLimiter(
        settings.bad_key_rate_per_second, settings.bad_key_burst
    )
    app[appkeys.HEALTH] = {}
    app[METRICS] = Metrics()
    app[BACKGROUND] = []
    app.cleanup_ctx.extend([_postgres, _s3, _background])
    app.on_shutdown.append(_answer_long_polls)
    for table in route_tables():
        app.add_routes(table)
    fastpoll.install(app)
    return app
