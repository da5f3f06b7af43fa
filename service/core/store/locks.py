"""Advisory locks: one sweeper and one outbox relay at a time (for a transaction), one
scheduler across all consumers (for a session)."""

from __future__ import annotations

import asyncpg


async def try_xact_lock(conn: asyncpg.Connection, key: int) -> bool:
    """The lock ``key`` until the transaction ends, if no one holds it (else False)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


async def try_session_lock(conn: asyncpg.Connection, key: int) -> bool:
    """The lock ``key`` until the session ends, if no one holds it (else False)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
