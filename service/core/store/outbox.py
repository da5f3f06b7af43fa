"""The outbox: messages written in the same transaction as the change they announce, and
published afterwards by the relay (service/core/outbox.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec


class Unsent(msgspec.Struct, frozen=True):
    id: int
    exchange: str
    routing_key: str
    message_id: str
    body: bytes
    headers: dict[str, Any]


async def unsent(conn: asyncpg.Connection, limit: int) -> list[Unsent]:
    """The oldest messages not yet published, in the order they were written."""
    rows = await conn.fetch(
        "SELECT id, exchange, routing_key, message_id, body, headers::text AS headers"
        " FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        limit,
    )
    return [
        Unsent(
            id=r["id"],
            exchange=r["exchange"],
            routing_key=r["routing_key"],
            message_id=r["message_id"],
            body=bytes(r["body"]),
            headers=msgspec.json.decode(r["headers"]) if r["headers"] else {},
        )
        for r in rows
    ]


async def mark_sent(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", ids)
