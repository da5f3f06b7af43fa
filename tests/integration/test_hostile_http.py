"""Hostile or broken HTTP peers: other tenants' objects, aborted and stalled uploads,
oversized headers, key guessing; and the timestamps a long run reports."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime

import msgspec
import pytest

from service.core.s3 import s3_client
from service.core.store import keys as keys_store
from service.core.store import s3_prefixes
from service.gateway import appkeys
from tests.conftest import wait_for
from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, gateway, run_and_wait, upload_feed
from tests.integration.feeds import generate

FEED = b"sku,name,price,currency\nA-1,Widget,1.50,USD\nA-2,Gadget,2.50,EUR\n"


async def _stored_uri(client, headers, ids) -> str:
    js = await (await client.get(f"/jobs/{ids['submission_job_id']}", headers=headers)).json()
    return str(js["result"]["s3_uri"])


async def _register(client, headers, uri):
    return await client.post("/feeds", json={"s3_uri": uri}, headers=headers)


async def test_another_tenants_upload_cannot_be_registered(client, acme, globex, settings):
    ids = await upload_feed(client, acme, FEED)
    uri = await _stored_uri(client, acme, ids)
    # Keys carry the tenant id and an unguessable token, no sequence to walk.
    assert re.fullmatch(
        rf"s3://{settings.s3_bucket}/tenants/\d+/{ids['feed_id']}/"
        rf"{ids['submission_job_id']}-[A-Za-z0-9_-]{{22}}\.csv",
        uri,
    )
    missing = uri.rsplit("/", 1)[0] + "/nothing-here.csv"
    stolen = await _register(client, globex, uri)
    absent = await _register(client, globex, missing)
    assert stolen.status == absent.status == 400
    a, b = await stolen.json(), await absent.json()
    # Exactly the same answer, but for the uri it names.
    assert a["message"].replace(uri, "URI") == b["message"].replace(missing, "URI")
    assert {**a, "message": "", "details": {}} == {**b, "message": "", "details": {}}
    assert a["details"] == {"field": "s3_uri", "s3_uri": uri}
    # The owner may register its own upload.
    own = await _register(client, acme, uri)
    assert own.status == 201, await own.text()


async def test_s3_uri_is_confined_to_the_allow_list(client, acme, globex, db, settings):
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key="partners/globex/feed.csv", Body=FEED)
        await s3.put_object(Bucket=settings.s3_bucket, Key="partners/acme/feed.csv", Body=FEED)
        await s3.put_object(Bucket=settings.s3_bucket, Key="uploads/acme/FD1/JS1.csv", Body=FEED)
    base = f"s3://{settings.s3_bucket}"
    # Nothing outside its own uploads by default.
    assert (await _register(client, globex, f"{base}/partners/globex/feed.csv")).status == 400
    async with db.acquire() as conn:
        tenant_id = await keys_store.ensure_tenant(conn, "globex")
        await s3_prefixes.allow(conn, tenant_id, f"{base}/partners/globex/")
        await s3_prefixes.allow(conn, tenant_id, f"{base}/")  # even the whole bucket ...
    ok = await _register(client, globex, f"{base}/partners/globex/feed.csv")
    assert ok.status == 201, await ok.text()
    # ... never lends other tenants' uploads, nor keys an HTTP layer could normalise.
    for uri in (
        f"{base}/uploads/acme/FD1/JS1.csv",
        f"{base}/tenants/1/x.csv",
        f"{base}/partners/globex/../acme/feed.csv",
        f"{base}/partners//acme/feed.csv",
    ):
        resp = await _register(client, globex, uri)
        assert resp.status == 400, uri
        assert (await resp.json())["message"] == f"Object {uri} does not exist or is not readable"


async def test_a_revoked_prefix_fails_the_run_like_a_missing_file(
    client, globex, consumer, db, settings
):
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key="partners/globex/feed.csv", Body=FEED)
    prefix = f"s3://{settings.s3_bucket}/partners/globex/"
    async with db.acquire() as conn:
        tenant_id = await keys_store.ensure_tenant(conn, "globex")
        await s3_prefixes.allow(conn, tenant_id, prefix)
    ids = await (await _register(client, globex, prefix + "feed.csv")).json()
    jv = ids["validation_job_id"]
    assert (await run_and_wait(client, globex, jv))["status"] == "completed"
    async with db.acquire() as conn:
        assert await s3_prefixes.revoke(conn, tenant_id, prefix)
    j = await run_and_wait(client, globex, jv, {"force": True})
    assert j["status"] == "failed" and j["error"]["code"] == "FILE_NOT_FOUND"


async def _raw_upload(
    client, head: bytes, body: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head + body)
    await writer.drain()
    return reader, writer


def _upload_head(key: str, length: int) -> bytes:
    return (
        "POST /feeds?name=broken HTTP/1.1\r\nHost: test\r\nContent-Type: text/csv\r\n"
        f"x-api-key: {key}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def _only_feed(client, headers) -> tuple[dict, dict, dict]:
    listing = await (await client.get("/jobs?job_type=validation", headers=headers)).json()
    assert len(listing["jobs"]) == 1
    jv = listing["jobs"][0]
    feed = await (await client.get(f"/feeds/{jv['feed_id']}", headers=headers)).json()
    js = await (await client.get(f"/jobs/{feed['submission_job_id']}", headers=headers)).json()
    return jv, feed, js


async def test_an_aborted_upload_leaves_nothing_runnable(client, acme):
    _, writer = await _raw_upload(client, _upload_head(acme["x-api-key"], 10_000_000), FEED)
    await asyncio.sleep(0.3)
    writer.transport.abort()  # the client goes away mid-body

    async def recorded():
        listing = await (await client.get("/jobs?job_type=submission", headers=acme)).json()
        return listing["jobs"] and listing["jobs"][0]["status"] == "failed"

    await wait_for(recorded, timeout=10)
    jv, feed, js = await _only_feed(client, acme)
    assert feed["status"] == "upload_failed"
    assert js["status"] == "failed" and js["error"]["code"] == "UPLOAD_FAILED"
    resp = await client.post(f"/jobs/{jv['job_id']}/run", headers=acme)
    assert resp.status == 409
    body = await resp.json()
    assert body["error_code"] == "FEED_NOT_READY"
    assert body["details"] == {"feed_id": feed["feed_id"], "feed_status": "upload_failed"}
    # A new file mends the feed.
    put = await client.put(
        f"/feeds/{feed['feed_id']}/file", data=FEED, headers={**acme, "Content-Type": "text/csv"}
    )
    assert put.status == 201
    feed = await (await client.get(f"/feeds/{feed['feed_id']}", headers=acme)).json()
    assert feed["status"] == "ready"
    assert (await client.post(f"/jobs/{jv['job_id']}/run", headers=acme)).status == 202


async def test_a_stalled_upload_times_out(settings, db, acme):
    quick = msgspec.structs.replace(settings, upload_read_timeout_seconds=0.5)
    async with gateway(quick, db) as client:
        reader, writer = await _raw_upload(client, _upload_head(acme["x-api-key"], 1000), FEED)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
            body = await asyncio.wait_for(reader.readexactly(length), 10)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 408 ")
        assert msgspec.json.decode(body)["error_code"] == "REQUEST_TIMEOUT"
        jv, feed, js = await _only_feed(client, acme)
        assert feed["status"] == "upload_failed"
        assert js["error"]["code"] == "REQUEST_TIMEOUT"
        assert jv["status"] == "created"


async def test_oversized_headers_get_the_error_body_and_no_traceback(client, acme, caplog):
    caplog.set_level(logging.DEBUG)
    resp = await client.get("/jobs", headers={**acme, "x-junk": "x" * 20_000})
    assert resp.status == 400
    body = await resp.json()
    assert body["error_code"] == "INVALID_REQUEST" and "8190 bytes" in body["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_successful_responses_carry_rate_limit_headers(settings, db, acme):
    slow = msgspec.structs.replace(settings, rate_limit_per_second=0.1, rate_limit_burst=10)
    async with gateway(slow, db) as client:
        resp = await client.get("/jobs", headers=acme)
        assert resp.status == 200
        assert resp.headers["RateLimit-Limit"] == "10"
        assert resp.headers["RateLimit-Remaining"] == "9"
        again = await client.get("/jobs/JV99999", headers=acme)  # errors carry them too
        assert again.status == 404 and again.headers["RateLimit-Remaining"] == "8"


async def test_bad_keys_are_throttled(settings, db):
    strict = msgspec.structs.replace(settings, bad_key_rate_per_second=0.5, bad_key_burst=5)
    async with gateway(strict, db) as client:
        statuses = [
            (await client.get("/jobs", headers={"x-api-key": f"guess-{i}"})).status
            for i in range(8)
        ]
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3
        resp = await client.get("/jobs", headers={"x-api-key": "guess-x"})
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1


async def test_a_throttled_address_has_no_guess_checked(settings, db):
    """The throttle comes before the look-up: once an address is throttled, even the right
    key gets 429 (no guess is checked at all), while a key that worked before the guessing
    started keeps working from the same address."""
    strict = msgspec.structs.replace(settings, bad_key_rate_per_second=0.01, bad_key_burst=3)
    async with gateway(strict, db) as client:
        assert (await client.get("/jobs", headers={"x-api-key": ACME_KEY})).status == 200
        statuses = [
            (await client.get("/jobs", headers={"x-api-key": f"guess-{i}"})).status
            for i in range(5)
        ]
        # Every look-up of a key not seen within the hour costs a token, ACME's first one too.
        assert statuses == [401, 401, 429, 429, 429]
        right_guess = await client.get("/jobs", headers={"x-api-key": GLOBEX_KEY})
        assert right_guess.status == 429
        client.app[appkeys.KEYS]._entries.clear()  # the 30 s cache gone: the 1 h memory stays
        assert (await client.get("/jobs", headers={"x-api-key": ACME_KEY})).status == 200


@pytest.mark.parametrize("rows", [150_000])
async def test_finished_at_is_when_the_run_ended(client, acme, consumer, db, tmp_path, rows):
    data, _ = generate(tmp_path, rows, "--seed", "21")
    ids = await upload_feed(client, acme, data)
    j = await run_and_wait(client, acme, ids["validation_job_id"])
    started = datetime.fromisoformat(j["started_at"])
    finished = datetime.fromisoformat(j["finished_at"])
    took_ms = (finished - started).total_seconds() * 1000
    assert took_ms >= 0.8 * j["result"]["duration_ms"], (took_ms, j["result"]["duration_ms"])
    assert datetime.fromisoformat(j["updated_at"]) >= finished
    changed = await db.fetchval("SELECT max(last_changed_at) FROM products")
    loaded = await db.fetchval("SELECT last_loaded_at FROM feeds")
    assert (changed - started).total_seconds() * 1000 >= 0.5 * j["result"]["duration_ms"]
    assert loaded >= changed
