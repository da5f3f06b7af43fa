"""One row hash everywhere: the staging table's product_hash(), Python's hash_text, the
migration's recompute from stored values, and both paths of the parse worker."""

from __future__ import annotations

import csv
import io

import msgspec
import structlog
import structlog.testing

from consumer.rules import RowFault
from consumer.validate import HeaderInfo, RowValidator, hash_text
from consumer.worker import Consumer
from tests.integration.conftest import run_and_wait, upload_feed
from tests.integration.feeds import generate

PRODUCTS = (
    "SELECT sku, name, description, price, currency, quantity, category, brand, gtin,"
    " updated_at, active, row_hash FROM products WHERE feed_id = $1 ORDER BY sku"
)


async def test_stored_hashes_follow_the_one_recipe(client, acme, consumer, db, tmp_path):
    data, summary = generate(tmp_path, 3000, "--seed", "7", "--messy-pct", "40", "--dirty-pct", "3")
    ids = await upload_feed(client, acme, data)
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    assert job["result"]["rows_valid"] == summary["valid"]
    # Python's recipe over the cleaned row gives the hash the staging table computed ...
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    header = HeaderInfo(next(reader))
    validator = RowValidator(header)
    expected: dict[str, str] = {}
    for fields in reader:
        try:
            row = validator.clean(fields)
        except RowFault:
            continue
        expected.setdefault(row[0], hash_text(row))
    stored = {r["sku"]: r["row_hash"] for r in await db.fetch(PRODUCTS, ids["feed_id"])}
    assert len(stored) == summary["valid"]
    texts = list(expected.items())
    hashes = await db.fetch(
        "SELECT t.sku, hashtextextended(t.text, 0) AS h"
        " FROM unnest($1::text[], $2::text[]) AS t(sku, text)",
        [sku for sku, _ in texts],
        [text for _, text in texts],
    )
    assert {r["sku"]: r["h"] for r in hashes} == stored
    # ... and so does the recompute from stored values that migration 0002 relies on.
    mismatched = await db.fetchval(
        "SELECT count(*) FROM products WHERE feed_id = $1 AND row_hash <> product_hash(sku,"
        " name, description, price::text, currency::text, quantity::text, category, brand,"
        " gtin, canonical_time(updated_at), active::text)",
        ids["feed_id"],
    )
    assert mismatched == 0


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
        finally:
            await consumer.stop()
        done = [e for e in logs if e["event"] == "run_completed"]
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
