"""Each feed's packed hash set (sql/0008_hash_sets.sql, service/core/store/hash_sets.py):
written by a load, read by the next run instead of a scan, and never stale: after any run
it holds exactly the (row hash, sku hash) pairs of the feed's live products, and any
write to products outside a load drops it."""

from __future__ import annotations

import numpy as np
import structlog
import structlog.testing

from consumer.known import PAIRS
from tests.conftest import wait_for
from tests.integration.conftest import run_and_wait, upload_feed

HEADER = b"sku,name,price,currency\n"
LIVE = "SELECT row_hash, sku_hash FROM products WHERE feed_id = $1 AND deleted_at IS NULL"


def feed(*rows: str) -> bytes:
    return HEADER + "".join(f"{row}\n" for row in rows).encode()


async def stored_set(db, feed_id: str) -> set[tuple[int, int]] | None:
    parts = await db.fetch(
        "SELECT pairs FROM feed_hash_sets WHERE feed_id = $1 ORDER BY part", feed_id
    )
    if not parts:
        return None
    pairs = np.frombuffer(b"".join(p["pairs"] for p in parts), PAIRS)
    assert len(set(pairs["sku"].tolist())) == len(pairs)  # one pair a product
    return set(zip(pairs["row"].tolist(), pairs["sku"].tolist(), strict=True))


async def live(db, feed_id: str) -> set[tuple[int, int]]:
    return {(r["row_hash"], r["sku_hash"]) for r in await db.fetch(LIVE, feed_id)}


async def run(client, acme, ids, body=None):
    with structlog.testing.capture_logs() as logs:
        job = await run_and_wait(client, acme, ids["validation_job_id"], body)
        assert job["status"] == "completed", job

        async def logged() -> list[dict]:  # written just after the commit the poll saw
            return [e for e in logs if e["event"] == "run_completed"]

        [done] = await wait_for(logged, timeout=10)
    return job["result"], done["load"]


async def put_file(client, acme, ids, data: bytes) -> None:
    resp = await client.put(
        f"/feeds/{ids['feed_id']}/file", data=data, headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 201, await resp.text()


async def test_each_run_leaves_the_set_of_its_live_products_and_the_next_reads_it(
    client, acme, consumer, db
):
    ids = await upload_feed(client, acme, feed("A,Cap,1.00,EUR", "B,Hat,2.00,EUR"))
    result, load = await run(client, acme, ids)
    assert load["path"] == "direct" and result["inserted"] == 2
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])

    result, load = await run(client, acme, ids, {"force": True})  # identical
    assert load["known_from"] == "set" and result["unchanged"] == 2
    assert "set_pairs" not in load  # nothing changed: the set stays as it was
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])

    await put_file(client, acme, ids, feed("A,Cap,1.50,EUR", "B,Hat,2.00,EUR", "C,Bag,3,EUR"))
    result, load = await run(client, acme, ids)
    assert load["known_from"] == "set" and load["set_pairs"] == 3
    assert (result["updated"], result["inserted"], result["unchanged"]) == (1, 1, 1)
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])

    await put_file(client, acme, ids, feed("C,Bag,3,EUR", "A,Cap,1.50,EUR"))
    result, load = await run(client, acme, ids, {"mode": "snapshot"})
    assert load["known_from"] == "set" and result["deleted"] == 1 and load["set_pairs"] == 2
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])

    await put_file(client, acme, ids, feed("C,Bag,9,EUR", "B,Hat,2.00,EUR"))  # B comes back
    result, load = await run(client, acme, ids, {"dry_run": True})
    assert (result["updated"], result["inserted"]) == (2, 0)  # B revived, counted as updated
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])  # untouched
    result, load = await run(client, acme, ids)
    assert load["known_from"] == "set" and (result["updated"], result["inserted"]) == (2, 0)
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])


async def test_a_write_outside_a_load_drops_every_set_and_is_then_seen(client, acme, consumer, db):
    data = feed("A,Cap,1.00,EUR", "B,Hat,2.00,EUR")
    ids = await upload_feed(client, acme, data)
    other = await upload_feed(client, acme, data)
    await run(client, acme, ids)
    await run(client, acme, other)
    assert await stored_set(db, ids["feed_id"]) is not None
    assert await stored_set(db, other["feed_id"]) is not None
    # An operator's hand-written fix, outside any load: the sets cannot know what changed.
    await db.execute(
        "UPDATE products SET price = 99, row_hash = row_hash + 1 WHERE feed_id = $1 AND sku = 'A'",
        ids["feed_id"],
    )
    assert await stored_set(db, ids["feed_id"]) is None
    assert await stored_set(db, other["feed_id"]) is None
    # The next run reads the feed's products, finds A differs from the file, writes it back.
    result, load = await run(client, acme, ids, {"force": True})
    assert load["known_from"] == "products" and result["updated"] == 1
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])
    row = await db.fetchrow(
        "SELECT price FROM products WHERE feed_id = $1 AND sku = 'A'", ids["feed_id"]
    )
    assert str(row["price"]) == "1.00"


async def test_a_run_of_the_staged_path_drops_the_set_it_cannot_keep(
    client, acme, consumer, db, settings
):
    import msgspec

    ids = await upload_feed(client, acme, feed("A,Cap,1.00,EUR"))
    await run(client, acme, ids)
    assert await stored_set(db, ids["feed_id"]) is not None
    assert consumer.deps is not None
    consumer.deps.settings = msgspec.structs.replace(settings, recognise_rows=False)
    try:
        await put_file(client, acme, ids, feed("A,Cap,2.00,EUR"))
        result, load = await run(client, acme, ids)
        assert load["path"] == "staged" and result["updated"] == 1
        assert await stored_set(db, ids["feed_id"]) is None  # written, so dropped
    finally:
        consumer.deps.settings = settings
    await put_file(client, acme, ids, feed("A,Cap,3.00,EUR"))
    result, load = await run(client, acme, ids)
    assert load["known_from"] == "products" and result["updated"] == 1
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])


async def test_a_write_outside_a_load_waits_for_the_loads_running_then_drops_the_sets(
    client, acme, consumer, db
):
    import asyncio

    from service.core.store import products

    ids = await upload_feed(client, acme, feed("A,Cap,1.00,EUR"))
    await run(client, acme, ids)
    assert await stored_set(db, ids["feed_id"]) is not None
    async with db.acquire() as load, db.acquire() as operator:
        async with load.transaction():
            await products.lock_feed(load, ids["feed_id"])  # as a load does, first
            fix = asyncio.create_task(
                operator.execute("UPDATE products SET price = 5 WHERE feed_id = $1", ids["feed_id"])
            )
            await asyncio.sleep(0.5)
            assert not fix.done()  # held until the load's transaction ends
            assert await stored_set(load, ids["feed_id"]) is not None
        await asyncio.wait_for(fix, 10)
    assert await stored_set(db, ids["feed_id"]) is None


def test_the_lock_the_trigger_takes_is_the_one_loads_share():
    from pathlib import Path

    from service.core.store.products import OUTSIDE_WRITES_LOCK

    sql = (Path(__file__).parents[2] / "sql" / "0008_hash_sets.sql").read_text()
    assert f"pg_advisory_xact_lock({OUTSIDE_WRITES_LOCK})" in sql


async def test_a_worker_that_stops_before_the_whole_set_leaves_no_set_and_a_completed_run(
    client, acme, consumer, db, monkeypatch
):
    from consumer import hashset

    ids = await upload_feed(client, acme, feed("A,Cap,1.00,EUR", "B,Hat,2.00,EUR"))
    await run(client, acme, ids)
    await put_file(client, acme, ids, feed("A,Cap,1.50,EUR", "B,Hat,2.00,EUR"))

    class Unheard:  # no frame of the worker's is one: as if it stopped before the parts
        pass

    monkeypatch.setattr(hashset, "Kept", Unheard)
    result, load = await run(client, acme, ids)
    assert result["updated"] == 1 and load["set_pairs"] is None
    assert await stored_set(db, ids["feed_id"]) is None
    monkeypatch.undo()
    result, load = await run(client, acme, ids, {"force": True})
    assert load["known_from"] == "products" and result["unchanged"] == 2
    assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])


async def test_feeds_loading_at_once_keep_each_its_own_set(client, acme, consumer, db):
    import asyncio

    feeds = [await upload_feed(client, acme, feed(f"{s},Cap,1.00,EUR")) for s in "AB"]
    for ids in feeds:
        await run(client, acme, ids)
    for ids, sku in zip(feeds, "AB", strict=True):
        await put_file(client, acme, ids, feed(f"{sku},Cap,2.00,EUR", "N,New,3.00,EUR"))
    with structlog.testing.capture_logs() as logs:  # one capture for both runs
        jobs = await asyncio.gather(
            *(run_and_wait(client, acme, ids["validation_job_id"]) for ids in feeds)
        )

        async def both_logged() -> list[dict]:
            done = [e for e in logs if e["event"] == "run_completed"]
            return done if len(done) == 2 else []

        done = {e["job_id"]: e["load"] for e in await wait_for(both_logged, timeout=10)}
    for job, ids in zip(jobs, feeds, strict=True):
        result = job["result"]
        assert done[job["job_id"]]["known_from"] == "set"
        assert (result["updated"], result["inserted"]) == (1, 1)
        assert await stored_set(db, ids["feed_id"]) == await live(db, ids["feed_id"])
