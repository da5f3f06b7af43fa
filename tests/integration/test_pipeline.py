"""The run pipeline end to end: HTTP → outbox → RabbitMQ → consumer → S3 → PostgreSQL."""

from __future__ import annotations

from tests.integration.conftest import run_and_wait, upload_feed

FEED = (
    b"sku,name,description,price,currency,quantity,category,brand,gtin,updated_at,active\n"
    b"A-1,Widget,A fine widget,1.50,USD,3,Tools,Acme,4006381333931,2026-01-02T03:04:05Z,yes\n"
    b'A-2,  Gadget   two ,,"$1,234.50",eur,,,,,2026-02-03,0\n'
    b"bad sku,Nope,,1.00,USD,1,,,,,\n"
    b"A-3,Thing,,abc,USD,1,,,,,\n"
)


async def test_upload_run_and_poll_to_completed(client, acme, consumer, db):
    ids = await upload_feed(client, acme, FEED)
    jv = ids["validation_job_id"]
    resp = await client.post(f"/jobs/{jv}/run", headers=acme)
    assert resp.status == 202
    assert await resp.json() == {"job_id": jv, "status": "queued", "attempt": 1}
    assert resp.headers["Location"] == f"/jobs/{jv}"
    assert resp.headers["Retry-After"].isdigit()

    job = None
    for _ in range(600):
        got = await client.get(f"/jobs/{jv}?wait=5", headers=acme)
        job = await got.json()
        if job["status"] in ("completed", "failed"):
            break
    assert job["status"] == "completed", job
    r = job["result"]
    assert r["rows_read"] == 4 and r["rows_valid"] == 2 and r["rows_rejected"] == 2
    assert r["inserted"] == 2 and r["updated"] == 0 and r["unchanged"] == 0
    assert r["first_error"] == {
        "line": 4,
        "column": "sku",
        "code": "INVALID_SKU",
        "message": r["first_error"]["message"],
    }
    assert job["retry_after"] is None and "Retry-After" not in got.headers
    rows = await db.fetch(
        "SELECT sku, name, price::text, currency, quantity, active, gtin,"
        " updated_at FROM products ORDER BY sku"
    )
    assert [
        (x["sku"], x["name"], x["price"], x["currency"], x["quantity"], x["active"]) for x in rows
    ] == [
        ("A-1", "Widget", "1.50", "USD", 3, True),
        ("A-2", "Gadget two", "1234.50", "EUR", 0, False),
    ]

    errors = await (await client.get(f"/jobs/{jv}/errors", headers=acme)).json()
    assert [(e["line"], e["column"], e["code"]) for e in errors["errors"]] == [
        (4, "sku", "INVALID_SKU"),
        (5, "price", "INVALID_PRICE"),
    ]
    assert errors["errors"][0]["raw"] == "bad sku,Nope,,1.00,USD,1,,,,,"

    runs = await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json()
    assert [(r["attempt"], r["status"]) for r in runs["runs"]] == [(1, "completed")]
    assert runs["runs"][0]["requested_by"].startswith("api:")


async def test_seed_run_example_with_wait(client, acme, consumer):
    ids = await upload_feed(client, acme, FEED)
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    assert {k: job[k] for k in ("job_id", "status")} == {
        "job_id": ids["validation_job_id"],
        "status": "completed",
    }
