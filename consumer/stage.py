"""The staging table of one run, and the merge that writes only what changed.

Everything here runs inside the run's transaction: staging, de-duplication, the merge and
the job's completion commit together or not at all.
"""

from __future__ import annotations

import asyncpg
import msgspec

# The row hash: sql/0002_row_hash_bigint.sql defines product_hash(), over the cleaned text
# the parse worker stages (consumer.validate.hash_text spells the same recipe in Python, and
# tests/integration/test_stage_hash.py holds the two together). An empty or absent quantity
# or active is staged as NULL by the fast path and means 0 and true, as the cleaners say.
_HASH = (
    "product_hash(sku, name, description, price, currency, quantity, category, brand, gtin,"
    " updated_at, active)"
)

_COLUMNS = (
    "sku, name, description, price, currency, quantity, category, brand, gtin, updated_at,"
    " active, row_hash"
)
_VALUES = (
    "d.sku, d.name, d.description, d.price::numeric(12,2), d.currency,"
    " coalesce(d.quantity, '0')::integer, d.category, d.brand, d.gtin,"
    " d.updated_at::timestamptz, coalesce(d.active, 'true')::boolean, d.row_hash"
)


class MergeCounts(msgspec.Struct):
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


def stage_name(job_id: str, attempt: int) -> str:
    return f"stage_{job_id.lower()}_{attempt}"


def _literal(value: str) -> str:
    """A SQL string literal, for the few statements that cannot take parameters."""
    return "'" + value.replace("'", "''") + "'"


async def create_stage(conn: asyncpg.Connection, table: str, columns: list[str]) -> None:
    """The staging table; ``columns`` are the header's (``x<n>`` for ignored ones), which
    COPY fills in that order after ``line``. Columns the header lacks stay NULL."""
    # UNLOGGED: no WAL for rows that live one transaction; created in the run's transaction,
    # so a rollback (or a crash) takes it away with everything else.
    ignored = "".join(f", {c} text" for c in columns if c.startswith("x"))
    await conn.execute(
        f"CREATE UNLOGGED TABLE {table} ("
        " line integer NOT NULL, sku text NOT NULL, name text NOT NULL, description text,"
        " price text NOT NULL, currency text NOT NULL, quantity text, category text,"
        f" brand text, gtin text, updated_at text, active text{ignored},"
        f" row_hash bigint GENERATED ALWAYS AS ({_HASH}) STORED)"
    )


async def duplicates(conn: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    """Later occurrences of a sku (the first one wins), in file order, removed from staging."""
    await conn.execute(f"ANALYZE {table} (sku)")
    # A plain SELECT may run in parallel; the DELETE (which may not) only runs when needed.
    repeated = await conn.fetch(f"SELECT sku FROM {table} GROUP BY sku HAVING count(*) > 1")
    if not repeated:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        f"WITH ranked AS (SELECT line, sku, min(line) OVER (PARTITION BY sku) AS first_line"
        f"  FROM {table} WHERE sku = ANY($1::text[]))"
        f" DELETE FROM {table} t USING ranked r WHERE t.line = r.line AND r.line > r.first_line"
        f" RETURNING t.line, t.sku, r.first_line, t.name, t.price, t.currency",
        [r["sku"] for r in repeated],
    )
    return sorted(rows, key=lambda r: r["line"])


async def _classify(conn: asyncpg.Connection, table: str, feed_id: str) -> str:
    """One join of staging with the feed's products keeps only the rows to write: new skus,
    changed hashes, revived skus. Unchanged rows (a re-run: nearly all) go no further."""
    delta = f"{table}_delta"
    # CREATE TABLE AS may use parallel workers (INSERT ... SELECT may not), but takes no
    # parameters: the feed id goes in as a literal.
    await conn.execute(
        f"CREATE TEMP TABLE {delta} ON COMMIT DROP AS"
        f" SELECT s.*, p.sku IS NULL AS is_new FROM {table} s"
        f" LEFT JOIN products p ON p.feed_id = {_literal(feed_id)} AND p.sku = s.sku"
        f" WHERE p.sku IS NULL OR p.row_hash <> s.row_hash OR p.deleted_at IS NOT NULL"
    )
    return delta


async def _insert(conn: asyncpg.Connection, source: str, feed_id: str, job_id: str) -> int:
    """Insert the rows of ``source`` (aliased ``d``) as new products; returns how many."""
    status = await conn.execute(
        f"INSERT INTO products ({_COLUMNS}, feed_id, first_seen_job, last_changed_at)"
        f" SELECT {_VALUES}, $1, $2, statement_timestamp() FROM {source}",
        feed_id,
        job_id,
    )
    return int(status.split()[-1])


async def merge(
    conn: asyncpg.Connection, table: str, feed_id: str, job_id: str, *, snapshot: bool
) -> MergeCounts:
    counts = MergeCounts()
    feed_has_rows = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM products WHERE feed_id = $1)", feed_id
    )
    if not feed_has_rows:  # a first load: every staged row is new, no join needed
        counts.inserted = await _insert(conn, f"{table} d", feed_id, job_id)
        return counts
    delta = await _classify(conn, table, feed_id)
    # Changed rows (hash differs) and revived ones; equal rows are not touched at all.
    status = await conn.execute(
        f"UPDATE products p SET name = d.name, description = d.description,"
        f" price = d.price::numeric(12,2), currency = d.currency,"
        f" quantity = coalesce(d.quantity, '0')::integer, category = d.category,"
        f" brand = d.brand, gtin = d.gtin, updated_at = d.updated_at::timestamptz,"
        f" active = coalesce(d.active, 'true')::boolean, row_hash = d.row_hash,"
        f" last_changed_at = statement_timestamp(), deleted_at = NULL"
        f" FROM {delta} d WHERE NOT d.is_new AND p.feed_id = $1 AND p.sku = d.sku",
        feed_id,
    )
    counts.updated = int(status.split()[-1])
    counts.inserted = await _insert(conn, f"{delta} d WHERE d.is_new", feed_id, job_id)
    if snapshot:
        status = await conn.execute(
            "UPDATE products p"
            " SET deleted_at = statement_timestamp(), last_changed_at = statement_timestamp()"
            f" WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {table} s WHERE s.sku = p.sku)",
            feed_id,
        )
        counts.deleted = int(status.split()[-1])
    return counts


async def dry_counts(
    conn: asyncpg.Connection, table: str, feed_id: str, *, snapshot: bool
) -> MergeCounts:
    """What ``merge`` would do, counted without writing a single product."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE p.sku IS NULL) AS inserted,"
        f" count(*) FILTER (WHERE p.sku IS NOT NULL AND (p.row_hash <> s.row_hash"
        f"   OR p.deleted_at IS NOT NULL)) AS updated"
        f" FROM {table} s LEFT JOIN products p ON p.feed_id = $1 AND p.sku = s.sku",
        feed_id,
    )
    deleted = 0
    if snapshot:
        deleted = await conn.fetchval(
            f"SELECT count(*) FROM products p WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {table} s WHERE s.sku = p.sku)",
            feed_id,
        )
    return MergeCounts(inserted=row["inserted"], updated=row["updated"], deleted=deleted)
