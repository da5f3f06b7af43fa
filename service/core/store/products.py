"""The products table as a load writes it: the feed lock, the stored hashes, staging, and
the merge that writes only what changed (the consumer's ``consumer.load`` drives it).

Everything here runs inside the run's transaction: staging, de-duplication, the merge and
the job's completion commit together or not at all. Column lists and types come from the
one declaration of the product row (``service.core.product``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from decimal import Decimal

import asyncpg
import msgspec

from service.core.product import PRODUCT, Registry
from service.core.store.rows import many


class MergeCounts(msgspec.Struct):
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


# The advisory lock (two-key form) of sql/0008_hash_sets.sql's trigger.
OUTSIDE_WRITES_LOCK = "1718379876, 1"


def ident(name: str) -> str:
    """A quoted SQL identifier: the one way a name goes into a statement."""
    return '"' + name.replace('"', '""') + '"'


def stage_name(job_id: str, attempt: int) -> str:
    return f"stage_{job_id.lower()}_{attempt}"


def _count(status: str) -> int:
    return int(status.split()[-1])


async def lock_feed(conn: asyncpg.Connection, feed_id: str) -> None:
    """Two runs of one feed never load at once; different feeds go in parallel. The load
    also says which feed it loads (its writes to products then drop only that feed's
    packed hash set) and holds the shared form of the lock a write to products outside a
    load takes first (sql/0008_hash_sets.sql)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 7)),"
        f" pg_advisory_xact_lock_shared({OUTSIDE_WRITES_LOCK}),"
        " set_config('feedjobs.loading_feed', $1, true)",
        feed_id,
    )


async def feed_is_empty(conn: asyncpg.Connection, feed_id: str) -> bool:
    """No product at all, live or deleted: a first load, which goes straight in."""
    return not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM products WHERE feed_id = $1)", feed_id
    )


async def copy_stored_hashes(
    conn: asyncpg.Connection, feed_id: str, output: Callable[[bytes], Awaitable[None]]
) -> None:
    """The row and sku hash of every live product of the feed, as binary COPY chunks."""
    await conn.copy_from_query(
        "SELECT row_hash, sku_hash FROM products WHERE feed_id = $1 AND deleted_at IS NULL",
        feed_id,
        output=output,
        format="binary",
    )


async def create_stage(conn: asyncpg.Connection, table: str, registry: Registry = PRODUCT) -> None:
    # UNLOGGED: no WAL for rows that live one transaction; created in the run's transaction,
    # so a rollback (or a crash) takes it away with everything else.
    await conn.execute(registry.stage_ddl(ident(table)))


async def copy_rows(
    conn: asyncpg.Connection,
    table: str | None,
    source: AsyncIterable[bytes],
    registry: Registry = PRODUCT,
) -> None:
    """COPY the worker's lines into the stage ``table``, or (None) straight into products."""
    if table is None:
        await conn.copy_to_table(
            "products", source=source, columns=list(registry.direct_columns), format="csv"
        )
    else:
        columns = list(registry.stage_columns)
        await conn.copy_to_table(table, source=source, columns=columns, format="csv")


async def drop_stage(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {ident(table)}")


class Duplicate(msgspec.Struct, frozen=True):
    """A later occurrence of a sku: its line, the first line, and its cleaned values."""

    line: int
    sku: str
    first_line: int
    name: str
    price: Decimal
    currency: str


async def duplicates(conn: asyncpg.Connection, table: str) -> list[Duplicate]:
    """Later occurrences of a sku (the first one wins), in file order, removed from staging.
    Only the staged path needs this: a recognising worker rejects duplicates itself."""
    await conn.execute(f"ANALYZE {ident(table)} (sku)")
    # A plain SELECT may run in parallel; the DELETE (which may not) only runs when needed.
    repeated = await conn.fetch(f"SELECT sku FROM {ident(table)} GROUP BY sku HAVING count(*) > 1")
    if not repeated:
        return []
    t = ident(table)
    rows = await conn.fetch(
        f"WITH ranked AS (SELECT line, sku, min(line) OVER (PARTITION BY sku) AS first_line"
        f"  FROM {t} WHERE sku = ANY($1::text[]))"
        f" DELETE FROM {t} t USING ranked r WHERE t.line = r.line AND r.line > r.first_line"
        f" RETURNING t.line, t.sku, r.first_line, t.name, t.price, t.currency",
        [r["sku"] for r in repeated],
    )
    return sorted(many(Duplicate, rows), key=lambda d: d.line)


async def merge(
    conn: asyncpg.Connection,
    table: str,
    feed_id: str,
    job_id: str,
    *,
    snapshot: bool,
    gone: list[int] | None,
    few: bool,
    fresh: bool,
    registry: Registry = PRODUCT,
) -> MergeCounts:
    """Write the staged rows that differ from the stored ones (changed, revived, new) and,
    for a snapshot, delete the products the file no longer holds: ``gone`` (their row
    hashes) when the worker recognised rows, else every live sku not staged.

    ``few``: the stage is small beside the feed (a re-run that changed a few rows). The
    merge then looks each staged sku up by the primary key. PostgreSQL's planner prefers
    to hash-join the feed's whole table, which costs 5x more for 1% of a million rows.
    ``fresh``: some staged sku may have no product yet (else the INSERT is skipped)."""
    counts = MergeCounts()
    if few:
        await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
    # A recognising worker stages only rows to write; on the staged path the hash decides.
    counts.updated = _count(
        await conn.execute(
            f"UPDATE products p SET {registry.update_set},"
            " last_changed_at = statement_timestamp(),"
            f" deleted_at = NULL FROM {ident(table)} d WHERE p.feed_id = $1 AND p.sku = d.sku"
            f" AND (p.row_hash <> d.row_hash OR p.deleted_at IS NOT NULL)",
            feed_id,
        )
    )
    if fresh:
        counts.inserted = _count(
            await conn.execute(
                f"INSERT INTO products ({registry.column_list}, feed_id, first_seen_job,"
                f" last_changed_at) SELECT {registry.column_list}, $1, $2,"
                f" statement_timestamp() FROM {ident(table)} d"
                " WHERE NOT EXISTS"
                " (SELECT 1 FROM products p WHERE p.feed_id = $1 AND p.sku = d.sku)",
                feed_id,
                job_id,
            )
        )
    if few:
        await conn.execute("RESET enable_hashjoin; RESET enable_mergejoin")
    if snapshot:
        counts.deleted = await _delete_gone(conn, table, feed_id, gone)
    return counts


_DELETE = (
    "UPDATE products p SET deleted_at = statement_timestamp(),"
    " last_changed_at = statement_timestamp()"
)


async def _delete_gone(
    conn: asyncpg.Connection, table: str, feed_id: str, gone: list[int] | None
) -> int:
    if gone is None:
        status = await conn.execute(
            f"{_DELETE} WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {ident(table)} s WHERE s.sku = p.sku)",
            feed_id,
        )
    elif gone:
        status = await conn.execute(
            f"{_DELETE} FROM unnest($2::bigint[]) AS g(row_hash)"
            " WHERE p.feed_id = $1 AND p.deleted_at IS NULL AND p.row_hash = g.row_hash",
            feed_id,
            gone,
        )
    else:
        return 0
    return _count(status)


async def snapshot_deletions(conn: asyncpg.Connection, table: str, feed_id: str) -> tuple[int, int]:
    """(products a snapshot of the stage would delete, the feed's live products), counted
    before anything is written (the staged path's TOO_MANY_DELETIONS check)."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE NOT EXISTS"
        f"   (SELECT 1 FROM {ident(table)} s WHERE s.sku = p.sku)) AS gone, count(*) AS live"
        f" FROM products p WHERE p.feed_id = $1 AND p.deleted_at IS NULL",
        feed_id,
    )
    return int(row["gone"]), int(row["live"])


async def live_count(conn: asyncpg.Connection, feed_id: str) -> int:
    """The feed's live products."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM products WHERE feed_id = $1 AND deleted_at IS NULL", feed_id
        )
    )


async def dry_counts(
    conn: asyncpg.Connection, table: str, feed_id: str, *, snapshot: bool, gone: list[int] | None
) -> MergeCounts:
    """What ``merge`` would do, counted without writing a single product."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE p.sku IS NULL) AS inserted,"
        f" count(*) FILTER (WHERE p.sku IS NOT NULL AND (p.row_hash <> s.row_hash"
        f"   OR p.deleted_at IS NOT NULL)) AS updated"
        f" FROM {ident(table)} s LEFT JOIN products p ON p.feed_id = $1 AND p.sku = s.sku",
        feed_id,
    )
    deleted = 0
    if snapshot and gone is not None:
        deleted = len(gone)
    elif snapshot:
        deleted = await conn.fetchval(
            f"SELECT count(*) FROM products p WHERE p.feed_id = $1 AND p.deleted_at IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {ident(table)} s WHERE s.sku = p.sku)",
            feed_id,
        )
    return MergeCounts(inserted=row["inserted"], updated=row["updated"], deleted=deleted)


async def mark_loaded(conn: asyncpg.Connection, feed_id: str) -> None:
    await conn.execute(
        "UPDATE feeds SET last_loaded_at = statement_timestamp() WHERE id = $1", feed_id
    )
