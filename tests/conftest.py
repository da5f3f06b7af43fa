"""Shared fixtures: the real PostgreSQL, RabbitMQ and S3 server of this machine.

Each test gets its own database (copied from a migrated template), its own AMQP prefix and
its own bucket. Service addresses come from the same settings as the service
(DATABASE_URL, AMQP_URL, S3_ENDPOINT_URL); without S3_ENDPOINT_URL the embedded moto server
is started for the session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from service.cli import embedded_s3
from service.core.bus import delete_topology
from service.core.db import admin_url, database_name, ensure_database
from service.core.migrate import migrate
from service.core.settings import Settings, load_settings
from tests import services

try:
    SERVICES = services.prepare(os.environ)
except (RuntimeError, ValueError) as exc:  # a clear refusal, never a silent skip
    pytest.exit(str(exc), returncode=2)
BASE = load_settings(os.environ, log_level="WARNING")
TEMPLATE = f"{database_name(BASE.database_url)}_test_template"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _db_url(name: str) -> str:
    return admin_url(BASE.database_url).rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    if BASE.s3_endpoint_url:
        yield BASE.s3_endpoint_url
        return
    port = _free_port()
    proc = embedded_s3.start(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        embedded_s3.stop(proc)


@pytest.fixture(scope="session")
async def template_db() -> str:
    admin = await asyncpg.connect(admin_url(BASE.database_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_db_url(TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE


@pytest.fixture
async def database_url(template_db: str) -> AsyncIterator[str]:
    name = f"feedjobs_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url(BASE.database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    yield _db_url(name)
    admin = await asyncpg.connect(admin_url(BASE.database_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def amqp_prefix() -> AsyncIterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    await delete_topology(BASE.amqp_url, prefix)


@pytest.fixture
def settings(database_url: str, amqp_prefix: str, s3_endpoint: str) -> Settings:
    return load_settings(
        {},
        database_url=database_url,
        amqp_url=BASE.amqp_url,
        amqp_prefix=amqp_prefix,
        s3_endpoint_url=s3_endpoint,
        s3_bucket=f"feeds-{uuid.uuid4().hex[:10]}",
        log_level="WARNING",
        outbox_poll_seconds=1.0,
        sweep_interval_seconds=1.0,
        rate_limit_per_second=10000,
        rate_limit_burst=10000,
        consumer_metrics_port=0,  # tests run many consumers; test_metrics gives one a port
        # the webhook tests' receivers listen on loopback; their retries come fast
        webhook_allowed_hosts="127.0.0.1",
        webhook_retry_schedule="0.3,0.3,0.3",
        webhook_timeout_seconds=2.0,
        webhook_poll_seconds=0.1,
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    await ensure_database(settings.database_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


async def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Await an async predicate until it returns a truthy value (for cross-process effects)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def _dump_tasks(_sig: int, _frame: object) -> None:
    """``kill -USR1 <pytest pid>`` prints every pending asyncio task's stack to stderr: a
    hung test says where it hangs."""
    import gc
    import sys

    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Task) and not obj.done():
            print(f"--- {obj!r}", file=sys.__stderr__)
            coro = obj.get_coro()
            while coro is not None:  # the whole chain of awaits, innermost last
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                if frame is not None:
                    print(f"    {frame.f_code.co_filename}:{frame.f_lineno}", file=sys.__stderr__)
                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)


signal.signal(signal.SIGUSR1, _dump_tasks)
