"""Webhook endpoints and their deliveries: what the API writes and reads, and what the
consumer's deliverer claims and records (sql/0013_webhooks.sql)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from service.core.contracts import DeliveryView, WebhookView

WEBHOOK = "WH"
_VIEW = (
    "id AS webhook_id, url, events, feed_ids, rfc3339(created_at) AS created_at,"
    " rfc3339(disabled_at) AS disabled_at, disabled_reason,"
    " rfc3339(CASE WHEN previous_until > now() THEN previous_until END)"
    "  AS previous_secret_valid_until"
)
_DELIVERY = (
    "id AS delivery_id, event_type, job_id, status, attempts, rfc3339(created_at) AS created_at,"
    " rfc3339(CASE WHEN status = 'pending' THEN next_attempt_at END) AS next_attempt_at,"
    " rfc3339(delivered_at) AS delivered_at, last_status, last_error, last_latency_ms"
)


def _view(record: asyncpg.Record) -> WebhookView:
    return WebhookView(**dict(record))


async def create(
    db: asyncpg.Pool,
    tenant_id: int,
    url: str,
    events: list[str],
    feed_ids: list[str] | None,
    secret: str,
) -> WebhookView:
    row = await db.fetchrow(
        "INSERT INTO webhooks (id, tenant_id, url, events, feed_ids, secret)"
        " SELECT $1 || lpad(n::text, greatest(5, length(n::text)), '0'), $2, $3, $4, $5, $6"
        f" FROM nextval('webhook_seq') AS n RETURNING {_VIEW}",
        WEBHOOK,
        tenant_id,
        url,
        events,
        feed_ids,
        secret,
    )
    return _view(row)


async def count_for(db: asyncpg.Pool, tenant_id: int) -> int:
    return int(await db.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant_id))


async def list_for(db: asyncpg.Pool, tenant_id: int) -> list[WebhookView]:
    rows = await db.fetch(
        f"SELECT {_VIEW} FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id", tenant_id
    )
    return [_view(r) for r in rows]


async def get(db: asyncpg.Pool, webhook_id: str, tenant_id: int) -> WebhookView | None:
    row = await db.fetchrow(
        f"SELECT {_VIEW} FROM webhooks WHERE id = $1 AND tenant_id = $2", webhook_id, tenant_id
    )
    return None if row is None else _view(row)


async def delete(db: asyncpg.Pool, webhook_id: str, tenant_id: int) -> bool:
    status: str = await db.execute(
        "DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2", webhook_id, tenant_id
    )
    return status != "DELETE 0"


async def rotate(
    db: asyncpg.Pool, webhook_id: str, tenant_id: int, secret: str, grace_seconds: int
) -> str | None:
    """A new secret; the old one signs too for ``grace_seconds``. Returns when that ends."""
    found: str | None = await db.fetchval(
        "UPDATE webhooks SET previous_secret = secret, secret = $3,"
        " previous_until = now() + make_interval(secs => $4)"
        " WHERE id = $1 AND tenant_id = $2 RETURNING rfc3339(previous_until)",
        webhook_id,
        tenant_id,
        secret,
        float(grace_seconds),
    )
    return found


async def add_test(db: asyncpg.Pool, webhook_id: str, tenant_id: int) -> str | None:
    """A ``webhook.test`` delivery for the endpoint; its id (None: no such endpoint)."""
    found: str | None = await db.fetchval(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_type, body)"
        " SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, 'webhook.test',"
        "  json_build_object('type', 'webhook.test', 'timestamp', rfc3339(clock_timestamp()),"
        "   'data', json_build_object('webhook_id', w.id))::text"
        " FROM webhooks w WHERE w.id = $1 AND w.tenant_id = $2 RETURNING id",
        webhook_id,
        tenant_id,
    )
    return found


async def deliveries(
    db: asyncpg.Pool, webhook_id: str, after: int | None, limit: int
) -> list[tuple[int, DeliveryView]]:
    """Newest first, after the cursor's ``seq``."""
    rows = await db.fetch(
        f"SELECT seq, {_DELIVERY} FROM webhook_deliveries WHERE webhook_id = $1"
        " AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
        webhook_id,
        after,
        limit,
    )
    out = []
    for r in rows:
        fields = dict(r)
        seq = fields.pop("seq")
        out.append((seq, DeliveryView(**fields)))
    return out


async def retry(db: asyncpg.Pool, webhook_id: str, delivery_id: str) -> str | None:
    """Send the delivery again now (pending again, its attempts kept; a disabled endpoint
    is enabled again: its owner asked); its status before."""
    async with db.acquire() as conn, conn.transaction():
        found: str | None = await conn.fetchval(
            "WITH d AS (SELECT status FROM webhook_deliveries WHERE id = $2 AND webhook_id = $1"
            "  FOR UPDATE)"
            " UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now()"
            " FROM d WHERE id = $2 AND webhook_id = $1 RETURNING d.status",
            webhook_id,
            delivery_id,
        )
        if found is not None:
            await conn.execute(
                "UPDATE webhooks SET disabled_at = NULL, disabled_reason = NULL WHERE id = $1",
                webhook_id,
            )
    return found


# -- the deliverer ------------------------------------------------------------------------


class Due(msgspec.Struct, frozen=True):
    id: str
    webhook_id: str
    job_id: str | None
    body: str
    attempts: int  # with this one
    url: str
    secrets: list[str]  # the current secret, and the previous one during its grace


async def due_endpoints(db: asyncpg.Pool, skip: list[str], limit: int) -> list[str]:
    """Endpoints with a delivery due now (but those in ``skip``: at their in-flight cap)."""
    rows = await db.fetch(
        "SELECT DISTINCT d.webhook_id FROM webhook_deliveries d"
        " JOIN webhooks w ON w.id = d.webhook_id AND w.disabled_at IS NULL"
        " WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND d.webhook_id <> ALL($1)"
        " LIMIT $2",
        skip,
        limit,
    )
    return [r["webhook_id"] for r in rows]


async def claim(db: asyncpg.Pool, webhook_id: str, limit: int, lease_seconds: float) -> list[Due]:
    """Up to ``limit`` due deliveries of the endpoint, oldest first, leased: none is sent
    twice at once; one whose sender died is due again when its lease ends."""
    rows = await db.fetch(
        "WITH c AS (SELECT d.id FROM webhook_deliveries d WHERE d.webhook_id = $1"
        "  AND d.status = 'pending' AND d.next_attempt_at <= now()"
        "  ORDER BY d.next_attempt_at, d.seq LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
        "  next_attempt_at = now() + make_interval(secs => $3)"
        " FROM c, webhooks w WHERE d.id = c.id AND w.id = d.webhook_id"
        " RETURNING d.id, d.webhook_id, d.job_id, d.body, d.attempts, w.url,"
        "  array_remove(ARRAY[w.secret, CASE WHEN w.previous_until > now()"
        "   THEN w.previous_secret END], NULL) AS secrets",
        webhook_id,
        limit,
        lease_seconds,
    )
    return [Due(**dict(r)) for r in rows]


async def delivered(db: asyncpg.Pool, due: Due, status: int, latency_ms: int) -> None:
    await db.execute(
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(),"
        " last_status = $2, last_error = NULL, last_latency_ms = $3 WHERE id = $1",
        due.id,
        status,
        latency_ms,
    )


async def attempt_failed(
    db: asyncpg.Pool,
    due: Due,
    status: int | None,
    error: str,
    latency_ms: int,
    retry_at: datetime | None,
    disable: str | None,
) -> None:
    """Record a failed attempt: due again at ``retry_at``, or failed for good; ``disable``:
    the endpoint is disabled for that reason (its pending deliveries fail with it)."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE webhook_deliveries SET status = CASE WHEN $5::timestamptz IS NULL"
            "  THEN 'failed' ELSE 'pending' END, next_attempt_at = coalesce($5, now()),"
            " last_status = $2, last_error = $3, last_latency_ms = $4 WHERE id = $1",
            due.id,
            status,
            error[:500],
            latency_ms,
            retry_at,
        )
        if disable is not None:
            await conn.execute(
                "UPDATE webhooks SET disabled_at = now(), disabled_reason = $2"
                " WHERE id = $1 AND disabled_at IS NULL",
                due.webhook_id,
                disable[:500],
            )
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'failed',"
                " last_error = coalesce(last_error, 'endpoint disabled')"
                " WHERE webhook_id = $1 AND status = 'pending'",
                due.webhook_id,
            )


async def backlog(db: asyncpg.Pool) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
    )
