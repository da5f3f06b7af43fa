"""Hash-partitioned ``products`` or not: what it changes at scale (issue: "the products table
at scale"). Not part of ``make bench`` (it writes about 2 x 6 GB); run it alone:

    python bench/partitions.py                     # 20M products over 2,000 feeds
    python bench/partitions.py --feeds 200         # 2M, to try it quickly

Two tables with the columns, key and fill factor of ``products`` are filled with the same
rows: ``flat`` (as today) and ``hashed`` (``PARTITION BY HASH (feed_id)``, ``--partitions``
of them). On each, the statements a load runs on one feed of ``--rows`` rows are timed
(median of ``--repeat``): a first load, a 1%-changed merge (by key), a snapshot's soft
delete of 1%, a whole feed's delete; then a VACUUM after 1% of 20 feeds changed, and one
after 10% of every feed changed (what decides whether indexes are vacuumed too); and the
sizes of the tables and their indexes. Each figure is given as hashed / flat.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Row, report  # noqa: E402
from bench.run import fresh_db  # noqa: E402
from service.core.migrate import migrate  # noqa: E402

COLUMNS = (
    "feed_id, sku, name, description, price, currency, quantity, category, brand, gtin,"
    " updated_at, active, row_hash, first_seen_job, sku_hash, attributes, first_seen_run"
)


def rows_of(feed: str, first: int, count: int, salt: int = 0) -> str:
    """A SELECT of ``count`` products of ``feed`` shaped like a real feed's."""
    return (
        f"SELECT {feed!r}, 'SKU-' || lpad(n::text, 8, '0'), 'Product ' || n,"
        " 'A sturdy product, number ' || n, (n % 1000) + 0.99, 'USD', n % 50, 'Shoes', 'Acme',"
        f" NULL, now(), true, hashtext(n::text || '{salt}')::bigint, 'JV00001',"
        " hashtext('s' || n)::bigint, NULL, 1"
        f" FROM generate_series({first}, {first + count - 1}) n"
    )


async def timed(conn: asyncpg.Connection, sql: str, *args: object) -> float:
    started = time.perf_counter()
    await conn.execute(sql, *args)
    return time.perf_counter() - started


async def fill(conn: asyncpg.Connection, table: str, feeds: int, per_feed: int) -> float:
    started = time.perf_counter()
    for f in range(feeds):
        await conn.execute(f"INSERT INTO {table} ({COLUMNS}) {rows_of(f'FD{f:05d}', 1, per_feed)}")
    await conn.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


async def operations(
    conn: asyncpg.Connection, table: str, rows: int, repeat: int
) -> dict[str, float]:
    """Median seconds of each statement of a load on one feed of ``rows`` rows."""
    times: dict[str, list[float]] = {}
    change = max(rows // 100, 1)
    for r in range(repeat):
        feed = f"FX{r:04d}"
        steps = {
            "first load": f"INSERT INTO {table} ({COLUMNS}) {rows_of(feed, 1, rows)}",
            "1% changed merge": (
                f"UPDATE {table} p SET price = p.price + 1, row_hash = p.row_hash + 1,"
                f" last_changed_at = now() WHERE p.feed_id = '{feed}'"
                f" AND p.sku IN (SELECT 'SKU-' || lpad(n::text, 8, '0')"
                f" FROM generate_series(1, {change}) n)"
            ),
            "snapshot, 1% deleted": (
                f"UPDATE {table} SET deleted_at = now() WHERE feed_id = '{feed}'"
                f" AND sku > 'SKU-' || lpad('{rows - change}', 8, '0')"
            ),
            "a feed deleted": f"DELETE FROM {table} WHERE feed_id = '{feed}'",
        }
        for name, sql in steps.items():
            times.setdefault(name, []).append(await timed(conn, sql))
    return {name: statistics.median(t) for name, t in times.items()}


async def churn_then_vacuum(
    conn: asyncpg.Connection, table: str, feeds: int, per_feed: int, every: int, pct: float
) -> float:
    """``pct``% of the rows of one feed in ``every`` changed, then the VACUUM that must
    follow (what autovacuum would do)."""
    changed = max(int(per_feed * pct / 100), 1)
    for f in range(0, feeds, every):
        await conn.execute(
            f"UPDATE {table} SET price = price + 1 WHERE feed_id = 'FD{f:05d}'"
            f" AND sku <= 'SKU-' || lpad('{changed}', 8, '0')"
        )
    return await timed(conn, f"VACUUM {table}")


async def sizes(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """(table bytes, index bytes), partitions included."""
    row = await conn.fetchrow(
        "SELECT sum(pg_table_size(c.oid))::bigint AS t, sum(pg_indexes_size(c.oid))::bigint AS i"
        " FROM pg_class c WHERE c.oid = $1::regclass"
        " OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)",
        table,
    )
    return int(row["t"]), int(row["i"])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--per-feed", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the feed timed")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    url = await fresh_db("feedjobs_partitions_bench")
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute(
            "CREATE TABLE flat (LIKE products INCLUDING DEFAULTS INCLUDING CONSTRAINTS,"
            " PRIMARY KEY (feed_id, sku)) WITH (fillfactor = 90);"
            "CREATE TABLE hashed (LIKE products INCLUDING DEFAULTS INCLUDING CONSTRAINTS,"
            " PRIMARY KEY (feed_id, sku)) PARTITION BY HASH (feed_id)"
        )
        for i in range(args.partitions):
            await conn.execute(
                f"CREATE TABLE hashed_{i} PARTITION OF hashed"
                f" FOR VALUES WITH (MODULUS {args.partitions}, REMAINDER {i})"
                " WITH (fillfactor = 90)"
            )
        print(f"filling: {args.feeds} feeds x {args.per_feed:,} rows, each table", flush=True)
        filled = {t: await fill(conn, t, args.feeds, args.per_feed) for t in ("flat", "hashed")}
        print(f"  filled in {filled}", flush=True)
        ops = {t: await operations(conn, t, args.rows, args.repeat) for t in ("flat", "hashed")}
        light, heavy = {}, {}
        for t in ("flat", "hashed"):  # 1% of 20 feeds; then 10% of every feed
            few = max(args.feeds // 20, 1)
            light[t] = await churn_then_vacuum(conn, t, args.feeds, args.per_feed, few, 1)
            heavy[t] = await churn_then_vacuum(conn, t, args.feeds, args.per_feed, 1, 10)
        size = {t: await sizes(conn, t) for t in ("flat", "hashed")}
    finally:
        await conn.close()
    rows: list[Row] = []

    def compare(name: str, flat: float, hashed: float) -> None:
        rows.append((f"{name}: flat", flat, "", "", True))
        rows.append((f"{name}: hashed", hashed, f"{hashed / flat:.2f}x", "(hashed / flat)", True))

    compare("fill, s", filled["flat"], filled["hashed"])
    for name in ops["flat"]:
        compare(f"{name}, s", ops["flat"][name], ops["hashed"][name])
    compare("VACUUM after 1% of 20 feeds changed, s", light["flat"], light["hashed"])
    compare("VACUUM after 10% of every feed changed, s", heavy["flat"], heavy["hashed"])
    compare("table, MB", size["flat"][0] / 2**20, size["hashed"][0] / 2**20)
    compare("indexes, MB", size["flat"][1] / 2**20, size["hashed"][1] / 2**20)
    report(
        "partitions",
        f"products flat or hash-partitioned, {args.feeds * args.per_feed:,} products",
        rows,
        feeds=args.feeds,
        per_feed=args.per_feed,
        partitions=args.partitions,
        timed_feed_rows=args.rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
