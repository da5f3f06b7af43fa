"""Tenants and API keys. Keys are stored as SHA-256 hashes and never logged."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg
import msgspec


class Principal(msgspec.Struct, frozen=True):
    tenant_id: int
    tenant: str
    key_id: int


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    return "fj_" + secrets.token_urlsafe(32)


async def ensure_tenant(conn: asyncpg.Connection, name: str) -> int:
    tenant_id: int = await conn.fetchval(
        "INSERT INTO tenants (name) VALUES ($1)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        name,
    )
    return tenant_id


async def add_key(conn: asyncpg.Connection, tenant: str, key: str) -> bool:
    """Give ``tenant`` (created if missing) the key ``key``; False if the key already existed."""
    async with conn.transaction():
        tenant_id = await ensure_tenant(conn, tenant)
        status = await conn.execute(
            "INSERT INTO api_keys (tenant_id, key_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            tenant_id,
            hash_key(key),
        )
    return bool(status.endswith(" 1"))


async def lookup(conn: asyncpg.Connection | asyncpg.Pool, key_hash: bytes) -> Principal | None:
    row = await conn.fetchrow(
        "SELECT k.id, k.key_hash, t.id AS tenant_id, t.name FROM api_keys k"
        " JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        key_hash,
    )
    if row is None or not secrets.compare_digest(bytes(row["key_hash"]), key_hash):
        return None
    return Principal(tenant_id=row["tenant_id"], tenant=row["name"], key_id=row["id"])
