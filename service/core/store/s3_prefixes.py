"""The operator's per-tenant allow-list of S3 prefixes (see service/core/s3_access.py)."""

from __future__ import annotations

import asyncpg


async def allowed(db: asyncpg.Pool | asyncpg.Connection, tenant_id: int) -> list[str]:
    rows = await db.fetch(
        "SELECT prefix FROM tenant_s3_prefixes WHERE tenant_id = $1 ORDER BY prefix", tenant_id
    )
    return [r["prefix"] for r in rows]


async def allow(conn: asyncpg.Connection, tenant_id: int, prefix: str) -> None:
    await conn.execute(
        "INSERT INTO tenant_s3_prefixes (tenant_id, prefix) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        tenant_id,
        prefix,
    )


async def revoke(conn: asyncpg.Connection, tenant_id: int, prefix: str) -> bool:
    status = await conn.execute(
        "DELETE FROM tenant_s3_prefixes WHERE tenant_id = $1 AND prefix = $2", tenant_id, prefix
    )
    return bool(status.endswith(" 1"))
