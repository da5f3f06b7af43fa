"""One row hash everywhere: the parse worker's (both paths, both load paths), and the
recompute from stored values that migration 0007 relies on."""

from __future__ import annotations

import io
import shutil
import uuid

import asyncpg
import msgspec
import structlog
import structlog.testing

from consumer.frames import End, WorkerConfig, decoder
from consumer.parse_worker import process
from consumer.worker import Consumer
from service.core.db import admin_url, ensure_database
from service.core.migrate import SQL_DIR, migrate
from service.core.product import NAMES, canonical_line, row_hash, sku_hash, stored_text
from service.core.store import products as stage
from tests.conftest import _db_url, wait_for
from tests.integration.conftest import run_and_wait, upload_feed
from tests.integration.feeds import generate

PRODUCTS = (
    "SELECT sku, name, description, price, currency, quantity, category, brand, gtin,"
    " updated_at, active, row_hash, sku_hash FROM products WHERE feed_id = $1 ORDER BY sku"
)


async def completed(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "run_completed"]


def recipe(rec: asyncpg.Record) -> tuple[int, int]:
    line = canonical_line([stored_text(rec[name]) for name in NAMES]).encode()
    return row_hash(line), sku_hash(rec["sku"].encode())


async def test_stored_hashes_follow_the_one_recipe(client, acme, consumer, db, tmp_path):
    data, summary = generate(tmp_path, 3000, "--seed", "7", "--messy-pct", "40", "--dirty-pct", "3")
    ids = await upload_feed(client, acme, data)
    job = await run_and_wait(client, acme, ids["validation_job_id"])  # a first load: direct
    assert job["result"]["rows_valid"] == summary["valid"]
    changed, _ = generate(tmp_path, 3000, "--seed", "8", "--base-seed", "7", "--change-pct", "5")
    resp = await client.put(
        f"/feeds/{ids['feed_id']}/file", data=changed, headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 201
    job = await run_and_wait(client, acme, ids["validation_job_id"])  # recognising, staged
    assert job["result"]["updated"] > 0
    stored = await db.fetch(PRODUCTS, ids["feed_id"])
    assert len(stored) == 3000
    # The hashes the worker wrote are the recipe's over the stored values: the recompute
    # migration 0007 does for rows loaded before it.
    assert all((r["row_hash"], r["sku_hash"]) == recipe(r) for r in stored)


async def test_migration_0007_recomputes_stored_hashes_so_rows_stay_unchanged(tmp_path):
    """A database at 0006 with products hashed the old way: after 0007 the worker
    recognises the very rows it would load."""
    name = f"feedjobs_mig_{uuid.uuid4().hex[:8]}"
    url = _db_url(name)
    await ensure_database(url)
    old = tmp_path / "sql"
    old.mkdir()
    for path in sorted(SQL_DIR.glob("000[1-6]_*.sql")):
        shutil.copy(path, old / path.name)
    conn = await asyncpg.connect(url)
    try:
        assert (await migrate(conn, old))[-1] == "0006_s3_events"
        await conn.execute(
            "INSERT INTO products (feed_id, sku, name, description, price, currency, quantity,"
            " category, brand, gtin, updated_at, active, row_hash, first_seen_job) VALUES"
            " ('FD1', 'A-1', 'Cap', 'a \"b\", c', 12.5, 'EUR', 0, NULL, 'Acme',"
            "  '4006381333931', '2026-01-02T03:04:05.25Z', true, 42, 'JV1'),"
            " ('FD1', 'A-2', 'Hat', NULL, 3, 'USD', 7, 'Hats', NULL, NULL, NULL, false, 43, 'JV1')"
        )
        assert (await migrate(conn))[0] == "0007_worker_hashes"
        stored = await conn.fetch(PRODUCTS, "FD1")
        assert all((r["row_hash"], r["sku_hash"]) == recipe(r) for r in stored)
        chunks: list[bytes] = []

        async def keep(data: bytes) -> None:
            chunks.append(len(data).to_bytes(4, "big") + data)

        await stage.copy_stored_hashes(conn, "FD1", keep)
    finally:
        await conn.close()
        admin = await asyncpg.connect(admin_url(url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    feed = (
        "sku,name,description,price,currency,quantity,category,brand,gtin,updated_at,active\n"
        'A-1,Cap,"a ""b"", c",12.50,EUR,0,,Acme,4006381333931,2026-01-02T03:04:05.250000Z,true\n'
        "A-2, Hat ,,$3,usd,7,Hats,,,,no\n"  # messy, cleaning to the stored values
    )
    out = io.BytesIO()
    stdin = b"".join(chunks) + b"\0\0\0\0" + feed.encode()
    process(io.BytesIO(stdin), out, WorkerConfig(recognise=True))
    frames, raw = [], out.getvalue()
    while raw:
        size = int.from_bytes(raw[:4], "big")
        frames.append(decoder.decode(raw[4 : 4 + size]))
        raw = raw[4 + size :]
    end = next(f for f in frames if isinstance(f, End))
    assert (end.rows_valid, end.unchanged, end.gone) == (2, 2, [])


async def test_the_fast_path_and_the_slow_path_load_the_same_products(
    client, acme, db, settings, tmp_path
):
    # Clean blocks first (the fast path takes them), then a block of messy and bad rows.
    clean, _ = generate(tmp_path, 20_000, "--seed", "8")
    dirty, summary = generate(
        tmp_path, 3000, "--seed", "9", "--messy-pct", "30", "--dirty-pct", "5"
    )
    data = clean + dirty.split(b"\n", 1)[1].replace(b"SKU-", b"DRT-")
    loaded = []
    for fast_path in (True, False):
        consumer = Consumer(msgspec.structs.replace(settings, fast_path=fast_path))
        await consumer.start()
        try:
            with structlog.testing.capture_logs() as logs:
                ids = await upload_feed(client, acme, data)
                job = await run_and_wait(client, acme, ids["validation_job_id"])
                # The line follows the commit the job's status shows: wait for it.
                done = await wait_for(lambda: completed(logs))
        finally:
            await consumer.stop()
        assert (done[0]["fast_path_rows"] > 10_000) is fast_path  # all but the first and last block
        rows = [dict(r) for r in await db.fetch(PRODUCTS, ids["feed_id"])]
        loaded.append((job["result"], rows))
    (fast_result, fast_rows), (slow_result, slow_rows) = loaded
    assert fast_rows == slow_rows and len(fast_rows) == 20_000 + summary["valid"]
    for key in ("rows_read", "rows_valid", "rows_rejected", "inserted", "first_error"):
        assert fast_result[key] == slow_result[key]
    assert fast_result["rows_rejected"] > 0
    errors = [
        [
            tuple(r)
            for r in await db.fetch(
                "SELECT line, column_name, code, message, raw FROM job_errors"
                " WHERE job_id = $1 ORDER BY line",
                j["id"],
            )
        ]
        for j in await db.fetch("SELECT id FROM jobs WHERE job_type = 'validation' ORDER BY id")
    ]
    assert errors[0] == errors[1] and len(errors[0]) == fast_result["rows_rejected"]
