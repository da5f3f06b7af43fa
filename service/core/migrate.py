"""Numbered SQL migrations from ``sql/``, applied in order under an advisory lock, then the
stored row hashes brought to the code's canonical form (``service.core.rehash``)."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg

from service.core.errors import ConfigError
from service.core.logs import get_logger
from service.core.rehash import ensure_canonical

log = get_logger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
LOCK_KEY = 0x6665_6564_6A6F  # "feedjo": one lock for every process migrating this database


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    files = sorted(p for p in sql_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return files


async def migrate(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    if not migration_files(sql_dir):
        # An install without the sql/ folder must not start against an empty schema.
        raise ConfigError(f"no migrations found in {sql_dir}: is the sql/ folder installed?")
    started = time.monotonic()
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        done: list[str] = []
        for path in migration_files(sql_dir):
            version = path.stem
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            done.append(version)
        await ensure_canonical(conn)
        if done:
            log.info(
                "migrations_applied",
                versions=done,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
