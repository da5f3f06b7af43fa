"""Idempotency-Key records of accepted run requests (24 hours, per tenant)."""

from __future__ import annotations

import asyncpg
import msgspec


class Remembered(msgspec.Struct, frozen=True):
    request_hash: bytes  # what the key was first used for
    body: bytes  # the 202 body answered then


async def lock_and_find(conn: asyncpg.Connection, tenant_id: int, key: str) -> Remembered | None:
    """Serialise requests with this key (until the transaction ends) and return what it
    answered within the last 24 hours, if anything."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))", key, tenant_id)
    row = await conn.fetchrow(
        "SELECT request_hash, body FROM idempotency_keys WHERE tenant_id = $1"
        " AND key = $2 AND created_at > now() - interval '24 hours'",
        tenant_id,
        key,
    )
    if row is None:
        return None
    return Remembered(request_hash=bytes(row["request_hash"]), body=bytes(row["body"]))


async def remember(
    conn: asyncpg.Connection, tenant_id: int, key: str, request_hash: bytes, body: bytes
) -> None:
    await conn.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body, headers)"
        " VALUES ($1, $2, $3, 202, $4, '{}') ON CONFLICT (tenant_id, key) DO UPDATE"
        " SET request_hash = EXCLUDED.request_hash, body = EXCLUDED.body,"
        " created_at = now()",
        tenant_id,
        key,
        request_hash,
        body,
    )
