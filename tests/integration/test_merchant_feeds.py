"""Feeds as merchants really send them: Merchant Center's header names and ``15.00 USD``
prices, their own columns kept as attributes (part of change detection), a header mapping
per feed and per run, and the header faults that fail a run writing nothing."""

from __future__ import annotations

import json

from tests.integration.conftest import run_and_wait, upload_feed

# A Google Merchant Center product data feed: 25 columns, tab-separated, Windows-1252.
MC_HEADER = [
    "id",
    "title",
    "description",
    "link",
    "image_link",
    "availability",
    "price",
    "sale_price",
    "brand",
    "gtin",
    "mpn",
    "condition",
    "google_product_category",
    "product_type",
    "color",
    "size",
    "gender",
    "age_group",
    "material",
    "pattern",
    "item_group_id",
    "shipping_weight",
    "custom_label_0",
    "custom_label_1",
    "adult",
]
MAPPED = {
    "id": "sku",
    "title": "name",
    "description": "description",
    "price": "price",
    "brand": "brand",
    "gtin": "gtin",
    "product_type": "category",
}
ATTRIBUTES = [h for h in MC_HEADER if h not in MAPPED]


def mc_row(i: int, color: str = "Rouge bordeaux") -> list[str]:
    return [
        f"MC-{i}",
        f"Chaussure légère n°{i}",
        "Cuir végétal, semelle crêpe – fabriquée à Besançon",
        f"https://shop.example/p/{i}",
        f"https://shop.example/i/{i}.jpg",
        "in_stock" if i % 3 else "out_of_stock",
        f"{i}.50 EUR",
        f"{i}.00 EUR" if i % 2 else "",
        "Sabots & Cie",
        "4006381333931" if i == 1 else "",
        f"MPN-{i:04d}",
        "new",
        "Vêtements et accessoires > Chaussures",
        "Chaussures > Été",
        color,
        "42",
        "unisex",
        "adult",
        "Cuir",
        "Uni",
        f"G-{i // 2}",
        "0.8 kg",
        "soldes d’été",
        "",
        "no",
    ]


def mc_feed(rows: list[list[str]]) -> bytes:
    lines = ["\t".join(MC_HEADER), *("\t".join(r) for r in rows)]
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


async def test_a_merchant_center_feed_in_windows_1252_loads_with_every_attribute(
    client, acme, consumer, db
):
    rows = [mc_row(i) for i in range(1, 41)]
    assert len(rows[0]) == 25
    ids = await upload_feed(
        client, acme, mc_feed(rows), "?delimiter=tab&encoding=windows-1252&mode=snapshot"
    )
    jv, feed_id = ids["validation_job_id"], ids["feed_id"]
    job = await run_and_wait(client, acme, jv)
    r = job["result"]
    assert (r["rows_valid"], r["rows_rejected"], r["inserted"]) == (40, 0, 40), job
    assert r["columns"] == MAPPED and r["attributes"] == ATTRIBUTES
    assert r["ignored_columns"] == [] and r["encoding"] == "windows-1252"
    stored = await db.fetchrow(
        "SELECT sku, name, description, price::text, currency, category, brand, gtin,"
        " attributes::text FROM products WHERE feed_id = $1 AND sku = 'MC-1'",
        feed_id,
    )
    assert dict(stored) | {"attributes": None} == {
        "sku": "MC-1",
        "name": "Chaussure légère n°1",
        "description": "Cuir végétal, semelle crêpe – fabriquée à Besançon",
        "price": "1.50",
        "currency": "EUR",
        "category": "Chaussures > Été",
        "brand": "Sabots & Cie",
        "gtin": "4006381333931",
        "attributes": None,
    }
    attributes = json.loads(stored["attributes"])
    expected = dict(zip(MC_HEADER, mc_row(1), strict=True))
    assert attributes == {k: expected[k] for k in ATTRIBUTES if expected[k]}
    assert attributes["custom_label_0"] == "soldes d’été"  # ’ is 0x92 in Windows-1252
    assert "custom_label_1" not in attributes  # empty: no value

    # An identical re-run changes nothing; one attribute changed is one update.
    again = await run_and_wait(client, acme, jv, {"force": True})
    assert (again["result"]["unchanged"], again["result"]["updated"]) == (40, 0)
    rows[6] = mc_row(7, color="Noir")
    put = await client.put(
        f"/feeds/{feed_id}/file", data=mc_feed(rows), headers={**acme, "Content-Type": "text/csv"}
    )
    assert put.status == 201
    changed = (await run_and_wait(client, acme, jv))["result"]
    assert (changed["updated"], changed["unchanged"], changed["inserted"]) == (1, 39, 0)
    color = await db.fetchval(
        "SELECT attributes->>'color' FROM products WHERE feed_id = $1 AND sku = 'MC-7'", feed_id
    )
    assert color == "Noir"


async def test_a_header_mapping_at_registration_and_per_run(client, acme, consumer, db):
    data = (
        "Artikelnummer;Bezeichnung;Preis;Währung;Farbe\n"
        "DE-1;Stiefel;19,99;EUR;schwarz\n"
        "DE-2;Sandale;9.90;EUR;braun\n"
    ).encode()
    mapping = {
        "Artikelnummer": "sku",
        "Bezeichnung": "name",
        "Preis": "price",
        "Währung": "currency",
    }
    query = "?delimiter=;&columns=" + json.dumps(mapping)
    ids = await upload_feed(client, acme, data, query)
    jv, feed_id = ids["validation_job_id"], ids["feed_id"]
    feed = await (await client.get(f"/feeds/{feed_id}", headers=acme)).json()
    assert feed["columns"] == mapping and feed["unknown_columns"] == "keep"
    job = await run_and_wait(client, acme, jv)
    r = job["result"]
    assert (r["rows_valid"], r["rows_rejected"]) == (1, 1), job  # 19,99 is no price
    assert r["first_error"]["code"] == "INVALID_PRICE"
    assert r["attributes"] == ["Farbe"]
    # A run's mapping replaces the feed's: without it, nothing names the sku.
    bare = await run_and_wait(client, acme, jv, {"columns": {}, "force": True})
    assert bare["error"]["code"] == "MISSING_COLUMNS", bare
    # Ignore the colour for one run: kept nowhere, listed as ignored.
    ignored = await run_and_wait(client, acme, jv, {"unknown_columns": "ignore", "force": True})
    assert ignored["result"]["ignored_columns"] == ["Farbe"]
    assert ignored["result"]["updated"] == 1  # the stored attributes went away
    attrs = await db.fetchval(
        "SELECT attributes FROM products WHERE feed_id = $1 AND sku = 'DE-2'", feed_id
    )
    assert attrs is None


async def test_header_faults_fail_the_run_and_write_nothing(client, acme, consumer, db):
    cases = [
        (b"sku,SKU,name,price,currency\nA,B,n,1,USD\n", "", "AMBIGUOUS_COLUMNS"),
        (
            b"a,b,name,price,currency\nA,B,n,1,USD\n",
            '&columns={"a":"sku","b":"sku"}',
            "AMBIGUOUS_COLUMNS",
        ),
        (
            b"sku,name,price,currency,color\nA,n,1,USD,red\n",
            "&unknown_columns=reject",
            "UNKNOWN_COLUMNS",
        ),
        (
            b"sku,name,price,currency," + b"x" * 101 + b"\nA,n,1,USD,y\n",
            "",
            "INVALID_ATTRIBUTE_NAME",
        ),
    ]
    failed = []
    for data, query, code in cases:
        ids = await upload_feed(client, acme, data, "?mode=upsert" + query)
        job = await run_and_wait(client, acme, ids["validation_job_id"])
        assert job["status"] == "failed" and job["error"]["code"] == code, job
        failed.append(job)
    assert failed[0]["error"]["details"] == {"ambiguous": {"sku": ["sku", "SKU"]}}
    assert "sku, SKU → sku" in failed[0]["error"]["message"]
    assert failed[2]["error"]["details"] == {"unknown": ["color"]}
    assert await db.fetchval("SELECT count(*) FROM products") == 0


async def test_mapping_options_are_validated_with_the_field_named(client, acme):
    for query in ('?columns={"a":"colour"}', "?columns=[1]", "?columns={", "?unknown_columns=x"):
        resp = await client.post(
            "/feeds" + query, data=b"x", headers={**acme, "Content-Type": "text/csv"}
        )
        body = await resp.json()
        assert resp.status == 400, (query, body)
        assert body["details"]["field"] in ("columns", "unknown_columns"), body
    for bad in ({"columns": {"id": "colour"}}, {"columns": []}, {"unknown_columns": "drop"}):
        reg = await client.post("/feeds", json={"s3_uri": "s3://feeds/x.csv", **bad}, headers=acme)
        assert reg.status == 400, bad
        assert (await reg.json())["details"]["field"].startswith(next(iter(bad))), bad


async def test_issues_roll_up_rejections_and_warnings(client, acme, consumer):
    data = (
        b"sku,name,price,currency,color\n"
        b'A-1,  Red   shoe ,"$1,234.5",usd,red\n'
        b"A-2,Blue,abc,USD,blue\n"
        b"A-3,Green,2.00,XXQ,\n"
        b"A-4,Plain,2.00,USD,\n"
    )
    ids = await upload_feed(client, acme, data, "?encoding=auto")
    jv, feed_id = ids["validation_job_id"], ids["feed_id"]
    r = (await run_and_wait(client, acme, jv))["result"]
    got = [(i["severity"], i["code"], i["column"], i["count"], i["lines"]) for i in r["issues"]]
    assert got == [
        ("error", "INVALID_CURRENCY", "currency", 1, [4]),
        ("error", "INVALID_PRICE", "price", 1, [3]),
        ("warning", "COLUMN_KEPT_AS_ATTRIBUTE", "color", 4, [1]),
        ("warning", "ENCODING_DETECTED", None, 4, []),
        ("warning", "VALUE_CLEANED", "currency", 1, [2]),
        ("warning", "VALUE_CLEANED", "name", 1, [2]),
        ("warning", "VALUE_CLEANED", "price", 1, [2]),
    ]
    by = {(i["code"], i["column"]): i for i in r["issues"]}
    assert by[("VALUE_CLEANED", "price")]["message"].endswith("'$1,234.5' → '1234.50'")
    assert by[("INVALID_PRICE", "price")]["docs"] == "docs/feed-format.md#columns"
    assert by[("ENCODING_DETECTED", None)]["message"] == "encoding auto read the file as utf-8"
    # An upsert file much smaller than the feed: a warning, not a failure (nothing deleted).
    put = await client.put(
        f"/feeds/{feed_id}/file",
        data=b"sku,name,price,currency\nA-4,Plain,2.00,USD\n",
        headers={**acme, "Content-Type": "text/csv"},
    )
    assert put.status == 201
    job = await run_and_wait(client, acme, jv, {"encoding": "utf-8", "max_deleted_ratio": 0.4})
    assert job["status"] == "completed" and job["result"]["deleted"] == 0
    shrank = [i for i in job["result"]["issues"] if i["code"] == "FILE_SHRANK"]
    assert len(shrank) == 1 and shrank[0]["count"] == 1 and shrank[0]["severity"] == "warning"
    assert "1 valid rows, the feed 2 live products" in shrank[0]["message"]
