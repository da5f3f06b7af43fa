"""Each feed's packed hash set (sql/0008_hash_sets.sql): the (row_hash, sku_hash) pair of
every live product, 16 bytes each, in parts. Read by a re-run instead of scanning the
feed's rows; written by a load, last, in its transaction. Only a load holding the feed's
lock (``products.lock_feed``) reads or writes a feed's set."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable

import asyncpg

PAIR_BYTES = 16
PART_BYTES = 4 * 1024 * 1024  # a multiple of PAIR_BYTES


async def read_each(
    conn: asyncpg.Connection, feed_id: str, output: Callable[[bytes], Awaitable[None]]
) -> None:
    """The feed's set to ``output``, a part at a time (one part in memory here). Inside
    the run's transaction (a cursor needs one)."""
    async for row in conn.cursor(
        "SELECT pairs FROM feed_hash_sets WHERE feed_id = $1 ORDER BY part", feed_id, prefetch=1
    ):
        await output(row["pairs"])


async def exists(conn: asyncpg.Connection, feed_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM feed_hash_sets WHERE feed_id = $1)", feed_id
        )
    )


async def write(conn: asyncpg.Connection, feed_id: str, parts: AsyncIterable[bytes]) -> int:
    """Replace the feed's set with ``parts`` (each a whole number of pairs); the number
    of pairs written."""
    await drop(conn, feed_id)
    count = part = 0
    async for pairs in parts:
        if not pairs:
            continue
        await conn.execute(
            "INSERT INTO feed_hash_sets (feed_id, part, pairs) VALUES ($1, $2, $3)",
            feed_id,
            part,
            pairs,
        )
        part += 1
        count += len(pairs) // PAIR_BYTES
    return count


async def drop(conn: asyncpg.Connection, feed_id: str) -> None:
    await conn.execute("DELETE FROM feed_hash_sets WHERE feed_id = $1", feed_id)
