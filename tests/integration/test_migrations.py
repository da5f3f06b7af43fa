"""Migrations apply to an empty database, are idempotent, and two racing processes agree."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from service.core.db import admin_url, ensure_database
from service.core.errors import ConfigError
from service.core.migrate import migrate, migration_files
from tests.conftest import BASE, _db_url

TABLES = {
    "tenants",
    "api_keys",
    "feeds",
    "jobs",
    "job_runs",
    "job_errors",
    "tenant_s3_prefixes",
    "feed_schedules",
    "feed_object_versions",
    "outbox",
    "idempotency_keys",
    "products",
    "feed_hash_sets",
    "canonical_form",
    "webhooks",
    "webhook_deliveries",
    "product_changes",
    "change_sets",
    "product_change_horizon",
    "schema_migrations",
}


async def test_migrations_apply_to_an_empty_database_and_are_idempotent():
    name = f"feedjobs_mig_{uuid.uuid4().hex[:8]}"
    url = _db_url(name)
    assert await ensure_database(url) is True
    assert await ensure_database(url) is False
    try:
        conns = [await asyncpg.connect(url) for _ in range(2)]
        try:
            applied = await asyncio.gather(*(migrate(c) for c in conns))
            versions = [p.stem for p in migration_files()]
            assert sorted(applied, key=len) == [[], versions]  # one applied them, one waited
            assert await migrate(conns[0]) == []
            tables = {
                r["tablename"]
                for r in await conns[0].fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            assert tables == TABLES
            recorded = [
                r["version"]
                for r in await conns[0].fetch(
                    "SELECT version FROM schema_migrations ORDER BY version"
                )
            ]
            assert recorded == versions
        finally:
            for c in conns:
                await c.close()
    finally:
        admin = await asyncpg.connect(admin_url(BASE.database_url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_missing_sql_folder_fails_loudly(tmp_path):
    conn = await asyncpg.connect(admin_url(BASE.database_url))
    try:
        with pytest.raises(ConfigError, match="no migrations found"):
            await migrate(conn, tmp_path)
    finally:
        await conn.close()
