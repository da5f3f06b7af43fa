"""POST /feeds (upload and registration), PUT /feeds/{id}/file, GET /feeds/{id}."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re

import msgspec
import psutil

from service.core.s3 import s3_client
from service.gateway import appkeys
from tests.integration.conftest import allow_prefix

CSV = b"sku,name,price,currency\nA-1,Widget,1.50,USD\n"


async def upload(client, headers, body=CSV, query="", **kw):
    h = {"Content-Type": "text/csv", **headers, **kw.pop("extra_headers", {})}
    return await client.post(f"/feeds{query}", data=body, headers=h)


async def test_upload_creates_feed_and_both_jobs(client, acme, settings):
    resp = await upload(client, acme, query="?name=spring&mode=snapshot&delimiter=,")
    assert resp.status == 201
    body = await resp.json()
    assert re.fullmatch(r"FD\d{5}", body["feed_id"])
    n = body["feed_id"][2:]
    assert body == {
        "feed_id": f"FD{n}",
        "submission_job_id": f"JS{n}",
        "validation_job_id": f"JV{n}",
    }
    assert resp.headers["Location"] == f"/feeds/FD{n}"

    js = await (await client.get(f"/jobs/JS{n}", headers=acme)).json()
    assert js["status"] == "completed" and js["job_type"] == "submission"
    assert js["result"]["bytes"] == len(CSV)
    assert js["result"]["sha256"] == hashlib.sha256(CSV).hexdigest()
    uri = js["result"]["s3_uri"]
    assert uri.startswith(f"s3://{settings.s3_bucket}/")

    jv = await (await client.get(f"/jobs/JV{n}", headers=acme)).json()
    assert jv["status"] == "created" and jv["job_type"] == "validation"
    assert jv["feed_id"] == f"FD{n}" and jv["result"] is None

    feed = await (await client.get(f"/feeds/FD{n}", headers=acme)).json()
    assert feed["name"] == "spring" and feed["mode"] == "snapshot" and feed["delimiter"] == ","
    assert feed["s3_uri"] == uri and feed["product_count"] == 0
    assert feed["validation_job_id"] == f"JV{n}" and feed["submission_job_id"] == f"JS{n}"

    bucket, key = uri[5:].split("/", 1)
    async with s3_client(settings) as s3:
        obj = await s3.get_object(Bucket=bucket, Key=key)
        assert await obj["Body"].read() == CSV


async def test_gzip_content_encoding_is_stored_decoded(client, acme):
    resp = await upload(
        client, acme, body=gzip.compress(CSV), extra_headers={"Content-Encoding": "gzip"}
    )
    assert resp.status == 201
    js = (await resp.json())["submission_job_id"]
    job = await (await client.get(f"/jobs/{js}", headers=acme)).json()
    assert job["result"]["sha256"] == hashlib.sha256(CSV).hexdigest()


async def test_upload_rejects_unknown_media_type(client, acme):
    resp = await client.post("/feeds", data=b"<x/>", headers={**acme, "Content-Type": "text/xml"})
    assert resp.status == 415
    body = await resp.json()
    assert body["error_code"] == "UNSUPPORTED_MEDIA_TYPE" and "text/xml" in body["message"]


async def test_upload_rejects_bad_mode_and_delimiter(client, acme):
    resp = await upload(client, acme, query="?mode=merge")
    assert resp.status == 400
    assert (await resp.json())["details"]["field"] == "mode"
    resp = await upload(client, acme, query="?delimiter=x")
    assert resp.status == 400
    assert (await resp.json())["details"]["field"] == "delimiter"


async def test_upload_over_the_limit_is_413_and_the_submission_failed(client, acme, settings, db):
    client.app[appkeys.SETTINGS] = msgspec.structs.replace(settings, max_upload_bytes=1000)
    # A declared length over the limit: refused before a byte is read, nothing created.
    declared = await upload(client, acme, body=b"x" * 5000)
    assert declared.status == 413
    body = await declared.json()
    assert body["error_code"] == "PAYLOAD_TOO_LARGE" and "1000" in body["message"]
    assert body["details"] == {"limit_bytes": 1000, "declared": 5000}

    async def chunked():  # no Content-Length: the limit is found while streaming
        for _ in range(5):
            yield b"x" * 1000

    resp = await upload(client, acme, body=chunked())
    assert resp.status == 413
    body = await resp.json()
    assert body["error_code"] == "PAYLOAD_TOO_LARGE" and "1000" in body["message"]
    js = body["details"]["submission_job_id"]
    job = await (await client.get(f"/jobs/{js}", headers=acme)).json()
    assert job["status"] == "failed" and job["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_register_existing_object(client, acme, settings, db):
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key="upstream/products.csv", Body=CSV)
    uri = f"s3://{settings.s3_bucket}/upstream/products.csv"
    body = {"s3_uri": uri, "delimiter": ";"}
    # Only where the operator allowed this tenant (service/core/s3_access.py).
    assert (await client.post("/feeds", json=body, headers=acme)).status == 400
    await allow_prefix(db, "acme", f"s3://{settings.s3_bucket}/upstream/")
    resp = await client.post("/feeds", json=body, headers=acme)
    assert resp.status == 201, await resp.text()
    ids = await resp.json()
    feed = await (await client.get(f"/feeds/{ids['feed_id']}", headers=acme)).json()
    assert feed["s3_uri"] == uri and feed["name"] == "products.csv" and feed["delimiter"] == ";"
    js = await (await client.get(f"/jobs/{ids['submission_job_id']}", headers=acme)).json()
    assert js["status"] == "completed" and js["result"]["bytes"] == len(CSV)


async def test_register_missing_or_malformed_uri_is_400(client, acme, settings):
    resp = await client.post(
        "/feeds", json={"s3_uri": f"s3://{settings.s3_bucket}/nope.csv"}, headers=acme
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["error_code"] == "INVALID_REQUEST" and "does not exist" in body["message"]
    for bad in ("http://x/y", "s3://bucket-only", "s3:///key"):
        resp = await client.post("/feeds", json={"s3_uri": bad}, headers=acme)
        assert resp.status == 400, bad
        assert (await resp.json())["details"]["field"] == "s3_uri"


async def test_register_rejects_unknown_fields_and_wrong_types(client, acme):
    resp = await client.post("/feeds", json={"s3_uri": "s3://a/b", "colour": "red"}, headers=acme)
    assert resp.status == 400
    assert "colour" in (await resp.json())["message"]
    resp = await client.post("/feeds", json={"s3_uri": 5}, headers=acme)
    assert resp.status == 400
    assert (await resp.json())["details"]["field"] == "s3_uri"
    resp = await client.post(
        "/feeds", data=b"{not json", headers={**acme, "Content-Type": "application/json"}
    )
    assert resp.status == 400


async def test_register_body_over_64k_is_413(client, acme):
    resp = await client.post(
        "/feeds",
        data=b"{" + b" " * 70000 + b"}",
        headers={**acme, "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert (await resp.json())["error_code"] == "PAYLOAD_TOO_LARGE"


async def test_put_file_makes_a_new_submission_for_the_same_validation_job(client, acme):
    first = await (await upload(client, acme)).json()
    v2 = CSV + b"B-2,Gadget,2.00,EUR\n"
    resp = await client.put(
        f"/feeds/{first['feed_id']}/file", data=v2, headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 201
    second = await resp.json()
    assert second["feed_id"] == first["feed_id"]
    assert second["validation_job_id"] == first["validation_job_id"]
    assert second["submission_job_id"] != first["submission_job_id"]
    js = await (await client.get(f"/jobs/{second['submission_job_id']}", headers=acme)).json()
    assert js["status"] == "completed" and js["result"]["bytes"] == len(v2)
    feed = await (await client.get(f"/feeds/{first['feed_id']}", headers=acme)).json()
    assert feed["submission_job_id"] == second["submission_job_id"]
    assert feed["s3_uri"] == js["result"]["s3_uri"]


async def test_put_file_on_registered_or_unknown_feed(client, acme, settings, db):
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key="u.csv", Body=CSV)
    await allow_prefix(db, "acme", f"s3://{settings.s3_bucket}/")
    reg = await (
        await client.post(
            "/feeds", json={"s3_uri": f"s3://{settings.s3_bucket}/u.csv"}, headers=acme
        )
    ).json()
    resp = await client.put(
        f"/feeds/{reg['feed_id']}/file", data=CSV, headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 400
    resp = await client.put(
        "/feeds/FD99999/file", data=CSV, headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 404
    assert (await resp.json())["detail"] == "Feed not found"


async def test_feeds_of_other_tenants_are_not_found(client, acme, globex):
    ids = await (await upload(client, acme)).json()
    resp = await client.get(f"/feeds/{ids['feed_id']}", headers=globex)
    assert resp.status == 404
    assert await resp.json() == {
        "error_code": "FEED_NOT_FOUND",
        "message": f"Feed {ids['feed_id']} not found",
        "detail": "Feed not found",
        "details": {"feed_id": ids["feed_id"]},
    }


async def test_large_upload_is_streamed_with_flat_memory(client, acme):
    """200 MB generated on the fly: the gateway (this process) must not buffer it."""
    total = 200 * 1024 * 1024
    line = b"SKU-00000000,Some product name here,12.50,USD\n"
    block = line * (1024 * 1024 // len(line))

    async def body():
        sent = 0
        while sent < total:
            chunk = block[: total - sent]
            sent += len(chunk)
            yield chunk

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    done = asyncio.Event()

    async def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    resp = await client.post("/feeds", data=body(), headers={**acme, "Content-Type": "text/csv"})
    done.set()
    await sampler
    assert resp.status == 201, await resp.text()
    js = (await resp.json())["submission_job_id"]
    job = await (await client.get(f"/jobs/{js}", headers=acme)).json()
    assert job["result"]["bytes"] == total
    grown_mb = (peak - base) / 1024 / 1024
    assert grown_mb < 80, f"process grew by {grown_mb:.0f} MB while streaming 200 MB"


async def test_list_feeds_newest_first_with_a_cursor(client, acme, globex):
    made = [(await (await upload(client, acme)).json())["feed_id"] for _ in range(3)]
    await upload(client, globex)  # another tenant's feed is never listed
    page = await (await client.get("/feeds?limit=2", headers=acme)).json()
    assert [f["feed_id"] for f in page["feeds"]] == made[::-1][:2]
    assert page["feeds"][0]["status"] == "ready" and "product_count" not in page["feeds"][0]
    rest = await (
        await client.get(f"/feeds?limit=2&cursor={page['next_cursor']}", headers=acme)
    ).json()
    assert [f["feed_id"] for f in rest["feeds"]] == made[:1] and rest["next_cursor"] is None
    none = await (await client.get("/feeds?status=upload_failed", headers=acme)).json()
    assert none == {"feeds": [], "next_cursor": None}
    bad = await client.get("/feeds?status=lost", headers=acme)
    assert bad.status == 400 and (await bad.json())["details"] == {"field": "status"}


async def test_lists_sort_both_ways_and_count_every_match(client, acme):
    made = [(await (await upload(client, acme)).json())["feed_id"] for _ in range(3)]
    for route, key, ids in (
        ("/feeds", "feed_id", made),
        ("/jobs?job_type=validation", "feed_id", made),
    ):
        sep = "&" if "?" in route else "?"
        first = await (
            await client.get(
                f"{route}{sep}sort=created_at&limit=2&include_total=true", headers=acme
            )
        ).json()
        items = first["feeds" if route == "/feeds" else "jobs"]
        assert [i[key] for i in items] == ids[:2] and first["total"] == 3
        more = await (
            await client.get(
                f"{route}{sep}sort=created_at&limit=2&cursor={first['next_cursor']}", headers=acme
            )
        ).json()
        rest = more["feeds" if route == "/feeds" else "jobs"]
        assert [i[key] for i in rest] == ids[2:] and "total" not in more
        # A cursor pages the order it was made for.
        wrong = await client.get(f"{route}{sep}cursor={first['next_cursor']}", headers=acme)
        assert wrong.status == 400 and (await wrong.json())["details"] == {"field": "cursor"}
        bad = await client.get(f"{route}{sep}sort=name", headers=acme)
        assert bad.status == 400 and (await bad.json())["details"] == {"field": "sort"}
