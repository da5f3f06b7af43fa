"""The recognising load path (stored hashes in the worker, first loads straight into
products) gives the same products, counts and rejections as the staged path (every row
staged and compared in PostgreSQL), over random sequences of feed versions: changes,
deletions, duplicates, messy spellings and bad rows, in both modes, with and without
dry_run (hypothesis)."""

from __future__ import annotations

import csv
import io
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import run_and_wait, upload_feed
from tests.integration.test_hash_sets import live, stored_set

SKUS = [f"P-{i}" for i in range(8)]
HEADER = ["sku", "name", "price", "currency", "quantity", "active", "description"]
RESULT_KEYS = (
    "rows_read",
    "rows_valid",
    "rows_rejected",
    "inserted",
    "updated",
    "unchanged",
    "deleted",
    "first_error",
    "file_unchanged",
    "dry_run",
)
PRODUCTS = (
    "SELECT sku, name, description, price, currency, quantity, active, row_hash, sku_hash,"
    " deleted_at IS NULL AS live FROM products WHERE feed_id = $1 ORDER BY sku"
)
ERRORS = (
    "SELECT line, column_name, code, message, raw FROM job_errors"
    " WHERE job_id = $1 AND attempt = $2 ORDER BY line, code"
)


# Two versions of each sku's row: versions of a feed repeat rows (unchanged), change them
# (the other variant), drop them and hold them twice (duplicates, one of which may be
# unchanged), as real feeds do.
POOL = [
    [sku, name, price, "EUR", quantity, active, description]
    for i, sku in enumerate(SKUS)
    for name, price, quantity, active, description in (
        ("Cap" if i % 2 else "Hat, blue", "1.00", "", "", "a, b" if i % 3 else ""),
        ('Say "hi"', "10.50", "3", "false", "plain"),
    )
]


@st.composite
def rows(draw: Any) -> list[str]:
    sku, name, price, currency, quantity, active, description = draw(st.sampled_from(POOL))
    spelling = draw(st.sampled_from(["clean", "clean", "messy", "bad"]))
    if spelling == "messy":  # cleans to the very same values
        name = f"  {name.replace(' ', '  ')} "
        price = f"${price.rstrip('0')}"
        currency = " eur "
        active = {"": "Y", "true": "yes", "false": "N"}[active]
        quantity = quantity or "0"
    elif spelling == "bad":
        price = "abc"
    return [sku, name, price, currency, quantity, active, description]


def as_csv(records: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(records)
    return buf.getvalue().encode()


versions = st.lists(
    st.tuples(
        st.lists(rows(), max_size=12),
        st.fixed_dictionaries(
            {
                "mode": st.sampled_from(["upsert", "snapshot"]),
                "dry_run": st.booleans(),
                "force": st.booleans(),
            }
        ),
    ),
    min_size=2,
    max_size=4,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=versions)
async def test_recognising_and_staged_paths_agree(client, acme, consumer, db, settings, history):
    paths = {
        recognise: msgspec.structs.replace(settings, recognise_rows=recognise)
        for recognise in (True, False)
    }
    feeds: dict[bool, dict[str, str]] = {}
    assert consumer.deps is not None
    for records, options in history:
        data = as_csv(records)
        seen = {}
        for recognise, path_settings in paths.items():
            if recognise in feeds:
                resp = await client.put(
                    f"/feeds/{feeds[recognise]['feed_id']}/file",
                    data=data,
                    headers={**acme, "Content-Type": "text/csv"},
                )
                assert resp.status == 201, await resp.text()
            else:
                feeds[recognise] = await upload_feed(client, acme, data)
            ids = feeds[recognise]
            consumer.deps.settings = path_settings
            job = await run_and_wait(client, acme, ids["validation_job_id"], options)
            result = job.get("result") or {}
            error = job.get("error") or {}
            if recognise:  # the feed's packed hash set, if kept, is exactly its live rows
                kept = await stored_set(db, ids["feed_id"])
                assert kept is None or kept == await live(db, ids["feed_id"]), (records, options)
            seen[recognise] = (
                job["status"],
                error.get("code"),
                {k: result.get(k) for k in RESULT_KEYS},
                [tuple(r) for r in await db.fetch(PRODUCTS, ids["feed_id"])],
                [tuple(r) for r in await db.fetch(ERRORS, job["job_id"], job["attempt"])],
            )
        assert seen[True] == seen[False], (records, options)
    consumer.deps.settings = settings
