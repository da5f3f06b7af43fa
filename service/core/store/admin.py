"""The operator's queries (python -m service jobs|job|keys|revoke-key): across tenants."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec


async def jobs(
    conn: asyncpg.Connection, tenant: str | None, statuses: list[str] | None, limit: int
) -> list[dict[str, Any]]:
    """Jobs across tenants, newest first, as JSON lines print them."""
    rows = await conn.fetch(
        "SELECT j.id AS job_id, t.name AS tenant, j.feed_id, j.job_type, j.status, j.attempt,"
        " j.losses, j.interruptions, rfc3339(j.updated_at) AS updated_at, j.message"
        " FROM jobs j JOIN tenants t ON t.id = j.tenant_id"
        " WHERE ($1::text IS NULL OR t.name = $1) AND ($2::text[] IS NULL OR j.status = ANY($2))"
        " ORDER BY j.created_at DESC, j.seq DESC LIMIT $3",
        tenant,
        statuses,
        limit,
    )
    return [dict(r) for r in rows]


async def job(conn: asyncpg.Connection, job_id: str) -> dict[str, Any] | None:
    """The job row (json columns decoded), its runs, and its first ten rejections."""
    row = await conn.fetchrow(
        "SELECT j.*, t.name AS tenant, rfc3339(j.created_at) AS created,"
        " rfc3339(j.updated_at) AS updated FROM jobs j JOIN tenants t ON t.id = j.tenant_id"
        " WHERE j.id = $1",
        job_id,
    )
    if row is None:
        return None
    runs = await conn.fetch(
        "SELECT attempt, status, requested_by, request_id, rfc3339(requested_at) AS requested_at,"
        " rfc3339(finished_at) AS finished_at, error::text AS error"
        " FROM job_runs WHERE job_id = $1 ORDER BY attempt DESC",
        job_id,
    )
    errors = await conn.fetch(
        "SELECT attempt, line, column_name, code, message FROM job_errors WHERE job_id = $1"
        " ORDER BY attempt DESC, line, ordinal LIMIT 10",
        job_id,
    )
    out = {k: v for k, v in dict(row).items() if k not in ("created_at", "updated_at")}
    for column in ("options", "progress", "result", "error"):
        if out.get(column) is not None:
            out[column] = msgspec.json.decode(out[column])
    out["runs"] = [
        {**dict(r), "error": msgspec.json.decode(r["error"]) if r["error"] else None} for r in runs
    ]
    out["rejections"] = [dict(e) for e in errors]
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in out.items()}


async def keys(conn: asyncpg.Connection, tenant: str | None) -> list[dict[str, Any]]:
    """API keys (never their secrets) with their tenant, as JSON lines print them."""
    rows = await conn.fetch(
        "SELECT k.id AS key_id, t.name AS tenant, rfc3339(k.created_at) AS created_at,"
        " rfc3339(k.revoked_at) AS revoked_at FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        " WHERE $1::text IS NULL OR t.name = $1 ORDER BY k.id",
        tenant,
    )
    return [dict(r) for r in rows]


async def revoke_key(conn: asyncpg.Connection, key_id: int) -> bool:
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return bool(status.endswith(" 1"))
