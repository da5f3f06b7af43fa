"""The outbox: messages written in the same transaction as the change they announce, and
published afterwards by the relay (service/core/outbox.py)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec

from service.core.contracts import RunRequest, encode


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


async def add_run_requests(
    conn: asyncpg.Connection, requests: list[tuple[str, int, str | None]]
) -> None:
    """Run requests into the outbox, one statement: (job id, attempt, request id) each."""
    ids = [f"{job}.{attempt}.{uuid.uuid4().hex[:8]}" for job, attempt, _ in requests]
    bodies = [encode(RunRequest(job_id=j, attempt=a, request_id=r)) for j, a, r in requests]
    await conn.execute(
        "INSERT INTO outbox (exchange, routing_key, message_id, body) SELECT 'jobs', 'run',"
        " u.message_id, u.body FROM unnest($1::text[], $2::bytea[]) AS u(message_id, body)",
        ids,
        bodies,
    )
