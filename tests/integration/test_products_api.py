"""A feed's products over HTTP: cursor pages in sku order, the cleaned columns by name in
their JSON types, the attributes, deletions on request, changes since a time; one sku;
tenant-scoped; every bad parameter a 400 naming it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.integration.conftest import run_and_wait, upload_feed

HEADER = b"sku,name,price,currency,quantity,updated_at,active,color\n"


def feed(skus: list[str]) -> bytes:
    return HEADER + b"".join(
        b"%s,Thing %s,1.5,eur,3,2026-01-02T03:04:05+01:00,no,red\n" % (s.encode(), s.encode())
        for s in skus
    )


async def test_products_are_readable_page_by_page(client, acme, globex, consumer):
    skus = ["A/1", "B-2", "C-3", "D-4", "E-5"]
    ids = await upload_feed(client, acme, feed(skus), "?mode=snapshot")
    jv, feed_id = ids["validation_job_id"], ids["feed_id"]
    await run_and_wait(client, acme, jv)
    url = f"/feeds/{feed_id}/products"
    seen, cursor = [], None
    while True:
        resp = await client.get(
            url, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=acme
        )
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        seen += body["products"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [p["sku"] for p in seen] == skus
    assert seen[0] == {
        "sku": "A/1",
        "name": "Thing A/1",
        "description": None,
        "price": "1.50",
        "currency": "EUR",
        "quantity": 3,
        "category": None,
        "brand": None,
        "gtin": None,
        "updated_at": "2026-01-02T02:04:05Z",
        "active": False,
        "attributes": {"color": "red"},
        "last_changed_at": seen[0]["last_changed_at"],
        "deleted_at": None,
    }
    one = await client.get(f"{url}/A/1", headers=acme)
    assert one.status == 200 and (await one.json()) == seen[0]
    only = await (await client.get(url, params={"sku": "C-3"}, headers=acme)).json()
    assert [p["sku"] for p in only["products"]] == ["C-3"]
    missing = await client.get(f"{url}/NOPE", headers=acme)
    assert missing.status == 404 and (await missing.json())["error_code"] == "PRODUCT_NOT_FOUND"
    # another tenant sees no such feed
    for path in (url, f"{url}/B-2"):
        other = await client.get(path, headers=globex)
        assert other.status == 404 and (await other.json())["error_code"] == "FEED_NOT_FOUND"

    # A snapshot without E-5 deletes it: hidden unless asked for; changed_since finds it.
    await asyncio.sleep(0.01)
    since = datetime.now(UTC).isoformat()
    put = await client.put(
        f"/feeds/{feed_id}/file", data=feed(skus[:4]), headers={**acme, "Content-Type": "text/csv"}
    )
    assert put.status == 201
    assert (await run_and_wait(client, acme, jv))["result"]["deleted"] == 1
    live = await (await client.get(url, headers=acme)).json()
    assert [p["sku"] for p in live["products"]] == skus[:4]
    every = await (await client.get(url, params={"include_deleted": "true"}, headers=acme)).json()
    assert every["products"][-1]["sku"] == "E-5" and every["products"][-1]["deleted_at"]
    changed = await (
        await client.get(
            url, params={"changed_since": since, "include_deleted": "true"}, headers=acme
        )
    ).json()
    assert [p["sku"] for p in changed["products"]] == ["E-5"]
    gone = await (await client.get(f"{url}/E-5", headers=acme)).json()
    assert gone["deleted_at"] is not None


async def test_bad_product_queries_are_400s_naming_the_field(client, acme, consumer):
    ids = await upload_feed(client, acme, feed(["A-1"]))
    url = f"/feeds/{ids['feed_id']}/products"
    for params, field in [
        ({"include_deleted": "maybe"}, "include_deleted"),
        ({"changed_since": "yesterday"}, "changed_since"),
        ({"cursor": "!!"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
    ]:
        resp = await client.get(url, params=params, headers=acme)
        assert resp.status == 400, params
        assert (await resp.json())["details"]["field"] == field
    assert (await client.get("/feeds/FD99999/products", headers=acme)).status == 404
