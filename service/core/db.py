"""PostgreSQL connections: create the database if missing, a pool with bounded start-up retries."""

from __future__ import annotations

import urllib.parse

import asyncpg

from service.core.errors import ConfigError
from service.core.logs import get_logger
from service.core.retry import until_reachable

log = get_logger(__name__)

# PostgreSQL refusing or dropping a connection, or any socket error on the way to it.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
)


def database_name(url: str) -> str:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    if not name:
        raise ConfigError("invalid setting DATABASE_URL: it names no database")
    return urllib.parse.unquote(name)


def admin_url(url: str) -> str:
    """The same server, database ``postgres``: where CREATE DATABASE is issued."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/postgres"))


async def ensure_database(url: str) -> bool:
    """Create the database named by ``url`` if it does not exist; True when it was created."""
    name = database_name(url)
    conn = await asyncpg.connect(admin_url(url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        log.info("database_created", database=name)
        return True
    finally:
        await conn.close()


async def create_pool(url: str, *, max_size: int, retries: int) -> asyncpg.Pool:
    """A pool on the database ``url`` names (created first if it does not exist), once
    PostgreSQL answers: a process started during an outage waits (``postgres_waiting``,
    then ``postgres_ready``), ``retries`` tries at most, 0 for as long as it takes."""

    async def connect() -> asyncpg.Pool:
        await ensure_database(url)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size, command_timeout=None)
        assert pool is not None
        return pool

    return await until_reachable("postgres", connect, retries=retries, unreachable=UNREACHABLE)


async def drop_database(url: str) -> None:
    """Drop the database named by ``url`` (the demo's reset), sessions and all."""
    conn = await asyncpg.connect(admin_url(url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
    finally:
        await conn.close()
