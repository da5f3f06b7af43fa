"""A random valid feed (any delimiter, quoting, BOM, line endings, gzip or not) loads into
PostgreSQL with every row and every value intact (hypothesis; see the unit twin)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from service.core.product import NAMES as COLUMNS
from tests.integration.conftest import run_and_wait
from tests.unit.test_feed_properties import valid_feeds


def stored(row) -> dict[str, str | None]:
    """A products row as the canonical text feed-format.md describes."""
    when = row["updated_at"]
    if when is not None:
        spec = "microseconds" if when.microsecond else "seconds"
        when = when.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
    return {
        "sku": row["sku"],
        "name": row["name"],
        "description": row["description"],
        "price": str(row["price"]),
        "currency": row["currency"],
        "quantity": str(row["quantity"]),
        "category": row["category"],
        "brand": row["brand"],
        "gtin": row["gtin"],
        "updated_at": when,
        "active": "true" if row["active"] else "false",
        "attributes": row["attributes"],
    }


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(feed=valid_feeds())
async def test_a_valid_feed_loads_every_row_intact(client, acme, consumer, db, feed):
    data, delimiter, _, expected = feed
    resp = await client.post(
        "/feeds",
        params={"delimiter": delimiter},
        data=data,
        headers={**acme, "Content-Type": "text/csv"},
    )
    assert resp.status == 201, await resp.text()
    ids = await resp.json()
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    assert job["status"] == "completed", job
    assert job["result"]["inserted"] == len(expected) and job["result"]["rows_rejected"] == 0
    rows = await db.fetch(
        f"SELECT {', '.join(COLUMNS)}, attributes FROM products WHERE feed_id = $1",
        ids["feed_id"],
    )
    for row in expected:
        row["quantity"] = row["quantity"] or "0"
        row["active"] = row["active"] or "true"
    by_sku = {r["sku"]: stored(r) for r in rows}
    assert by_sku == {row["sku"]: row for row in expected}
