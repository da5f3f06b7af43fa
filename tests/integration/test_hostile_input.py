"""The hostile corpus (tests/corpus/) through the whole pipeline, and the load options."""

from __future__ import annotations

import asyncio
import gzip
import urllib.parse
from pathlib import Path

import pytest

from consumer.csvread import FIELD_LIMIT
from service.core.s3 import s3_client
from tests.corpus.expected import EXPECTED
from tests.integration.conftest import allow_prefix, run_and_wait, upload_feed, wait_terminal

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
H = "sku,name,price,currency\n"


async def load(client, headers, data: bytes, delimiter: str = ",", body=None, query=""):
    q = f"?delimiter={urllib.parse.quote(delimiter)}{query}"
    ids = await upload_feed(client, headers, data, q)
    return ids, await run_and_wait(client, headers, ids["validation_job_id"], body)


async def load_object(client, headers, settings, db, data: bytes, name: str):
    """A feed registered on an object of the tenant's bucket: how a 0-byte file reaches us
    (an empty upload is refused at the API, test_upload_limits.py)."""
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket, Key=f"corpus/{name}", Body=data)
    await allow_prefix(db, "acme", f"s3://{settings.s3_bucket}/corpus/")
    uri = f"s3://{settings.s3_bucket}/corpus/{name}"
    resp = await client.post("/feeds", json={"s3_uri": uri}, headers=headers)
    assert resp.status == 201, await resp.text()
    ids = await resp.json()
    return ids, await run_and_wait(client, headers, ids["validation_job_id"])


async def all_errors(client, headers, job_id):
    out, cursor = [], None
    while True:
        url = f"/jobs/{job_id}/errors?limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=headers)).json()
        out += page["errors"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_corpus_file(client, acme, consumer, db, settings, name):
    exp = EXPECTED[name]
    data = (CORPUS / name).read_bytes()
    if data:
        ids, job = await load(client, acme, data, str(exp.get("delimiter", ",")))
    else:
        ids, job = await load_object(client, acme, settings, db, data, name)
    if "error" in exp:
        assert job["status"] == "failed"
        assert job["error"]["code"] == exp["error"]
        for k, v in exp["details"].items():
            assert job["error"]["details"][k] == v
        assert job["error"]["message"]
        assert await db.fetchval("SELECT count(*) FROM products") == 0
        return
    assert job["status"] == "completed", job
    r = job["result"]
    assert (r["rows_read"], r["rows_valid"], r["rows_rejected"]) == (
        exp["rows_read"],
        exp["rows_valid"],
        len(exp["rejections"]),
    )
    assert r["inserted"] == exp["rows_valid"]
    assert r["ignored_columns"] == exp.get("ignored_columns", [])
    assert r.get("attributes") == exp.get("attributes")
    errors = await all_errors(client, acme, ids["validation_job_id"])
    assert [(e["line"], e["column"], e["code"]) for e in errors] == exp["rejections"]
    assert all(e["message"] and len(e["raw"]) <= 1024 for e in errors)
    if exp["rejections"]:
        first = exp["rejections"][0]
        assert (r["first_error"]["line"], r["first_error"]["code"]) == (first[0], first[2])
    else:
        assert r["first_error"] is None
    for sku, (name_, description) in exp.get("values", {}).items():
        row = await db.fetchrow("SELECT name, description FROM products WHERE sku = $1", sku)
        assert (row["name"], row["description"]) == (name_, description)
    assert await db.fetchval("SELECT count(*) FROM products") == exp["rows_valid"]


async def test_duplicate_sku_message_names_the_first_line(client, acme, consumer):
    ids, job = await load(client, acme, (H + "A,x,1,USD\nB,y,1,USD\nA,z,2,USD\n").encode())
    [err] = await all_errors(client, acme, ids["validation_job_id"])
    assert err["code"] == "DUPLICATE_SKU" and err["line"] == 4
    assert "line 2" in err["message"]


async def test_field_too_large_rejects_one_row(client, acme, consumer):
    big = "x" * (FIELD_LIMIT + 1)
    ids, job = await load(client, acme, (H + f'A,"{big}",1,USD\nB,ok,1,USD\n').encode())
    [err] = await all_errors(client, acme, ids["validation_job_id"])
    assert (err["line"], err["code"]) == (2, "FIELD_TOO_LARGE") and len(err["raw"]) == 1024
    assert job["result"]["rows_valid"] == 1


async def test_gzip_feed_is_read_as_a_stream(client, acme, consumer, settings):
    data = gzip.compress((H + "".join(f"S-{i},n{i},1.00,USD\n" for i in range(2000))).encode())
    ids, job = await load(client, acme, data)
    assert job["status"] == "completed" and job["result"]["rows_valid"] == 2000


async def test_gzip_bomb_fails_with_decompression_limit(client, acme, consumer, db):
    bomb = gzip.compress(H.encode() + b"A," + b"a" * (200 * 1024 * 1024) + b",1,USD\n", 9)
    assert len(bomb) < 1024 * 1024
    ids, job = await load(client, acme, bomb)
    assert job["status"] == "failed" and job["error"]["code"] == "DECOMPRESSION_LIMIT"
    assert "times" in job["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM products") == 0


async def test_snapshot_deletes_absent_and_revives_returning(client, acme, consumer, db):
    v1 = (H + "A,a,1,USD\nB,b,1,USD\nC,c,1,USD\n").encode()
    ids, job = await load(client, acme, v1, query="&mode=snapshot")
    jv, feed = ids["validation_job_id"], ids["feed_id"]

    async def put_and_run(data: bytes):
        await client.put(
            f"/feeds/{feed}/file", data=data, headers={**acme, "Content-Type": "text/csv"}
        )
        return (await run_and_wait(client, acme, jv))["result"]

    r = await put_and_run((H + "A,a,1,USD\nB,b2,1,USD\n").encode())
    assert (r["inserted"], r["updated"], r["unchanged"], r["deleted"]) == (0, 1, 1, 1)
    assert await db.fetchval("SELECT deleted_at IS NOT NULL FROM products WHERE sku = 'C'")
    feed_view = await (await client.get(f"/feeds/{feed}", headers=acme)).json()
    assert feed_view["product_count"] == 2
    r = await put_and_run((H + "A,a,1,USD\nB,b2,1,USD\nC,c,1,USD\n").encode())
    assert (r["inserted"], r["updated"], r["unchanged"], r["deleted"]) == (0, 1, 2, 0)
    assert await db.fetchval("SELECT deleted_at IS NULL FROM products WHERE sku = 'C'")
    # upsert mode leaves absent rows alone
    r = (await run_and_wait(client, acme, jv, {"mode": "upsert", "force": True}))["result"]
    assert r["deleted"] == 0


@pytest.mark.parametrize("data", [b"", H.encode(), (H + "bad sku,x,1,USD\n").encode()])
async def test_empty_snapshot_is_refused(client, acme, consumer, db, settings, data):
    ids, _ = await load_object(client, acme, settings, db, (H + "A,a,1,USD\n").encode(), "s.csv")
    async with s3_client(settings) as s3:  # the owner's next export, in its own bucket
        await s3.put_object(Bucket=settings.s3_bucket, Key="corpus/s.csv", Body=data)
    job = await run_and_wait(client, acme, ids["validation_job_id"], {"mode": "snapshot"})
    assert job["status"] == "failed" and job["error"]["code"] == "EMPTY_SNAPSHOT"
    assert await db.fetchval("SELECT count(*) FROM products WHERE deleted_at IS NULL") == 1


async def test_too_many_rejected_rows_writes_nothing(client, acme, consumer, db):
    ids, _ = await load(client, acme, (H + "A,a,1,USD\n").encode())
    before = await db.fetch("SELECT * FROM products")
    await client.put(
        f"/feeds/{ids['feed_id']}/file",
        data=(H + "A,changed,2,USD\nN,new,1,USD\nx y,1,1,USD\nx z,1,1,USD\n").encode(),
        headers={**acme, "Content-Type": "text/csv"},
    )
    job = await run_and_wait(client, acme, ids["validation_job_id"], {"max_rejected_rows": 1})
    assert job["status"] == "failed" and job["error"]["code"] == "TOO_MANY_REJECTED_ROWS"
    assert job["error"]["details"]["rows_rejected"] == 2
    assert job["error"]["details"]["max_rejected_rows"] == 1
    assert await db.fetch("SELECT * FROM products") == before
    errors = await all_errors(client, acme, ids["validation_job_id"])
    assert [e["line"] for e in errors] == [4, 5]  # rejections are still listed
    ok = await run_and_wait(client, acme, ids["validation_job_id"], {"max_rejected_rows": 2})
    assert ok["status"] == "completed" and ok["result"]["inserted"] == 1


async def test_feed_default_max_rejected_rows(client, acme, consumer):
    ids, job = await load(
        client, acme, (H + "x y,1,1,USD\n").encode(), query="&max_rejected_rows=0"
    )
    assert job["status"] == "failed" and job["error"]["code"] == "TOO_MANY_REJECTED_ROWS"


async def test_dry_run_counts_but_writes_nothing(client, acme, consumer, db):
    ids, job = await load(
        client, acme, (H + "A,a,1,USD\nbad sku,b,1,USD\n").encode(), body={"dry_run": True}
    )
    r = job["result"]
    assert r["dry_run"] and (r["inserted"], r["rows_rejected"]) == (1, 1)
    assert await db.fetchval("SELECT count(*) FROM products") == 0
    assert len(await all_errors(client, acme, ids["validation_job_id"])) == 1
    feed = await (await client.get(f"/feeds/{ids['feed_id']}", headers=acme)).json()
    assert feed["last_loaded_at"] is None


async def test_file_skip_and_force(client, acme, consumer, db):
    ids, first = await load(client, acme, (H + "A,a,1,USD\nB,b,1,USD\n").encode())
    jv = ids["validation_job_id"]
    again = await run_and_wait(client, acme, jv)
    r = again["result"]
    assert r["file_unchanged"] is True and r["unchanged"] == 2 and r["bytes_read"] == 0
    other_options = await run_and_wait(client, acme, jv, {"mode": "snapshot"})
    assert other_options["result"]["file_unchanged"] is False
    forced = await run_and_wait(client, acme, jv, {"mode": "snapshot", "force": True})
    assert forced["result"]["file_unchanged"] is False and forced["result"]["unchanged"] == 2
    # After a forced run, the next unforced one skips the unchanged file; so does the one
    # after it, reporting the same counts.
    for _ in range(2):
        skipped = (await run_and_wait(client, acme, jv, {"mode": "snapshot"}))["result"]
        assert skipped["file_unchanged"] is True, skipped
        assert (skipped["unchanged"], skipped["rows_read"], skipped["inserted"]) == (2, 0, 0)
    # A dry run loaded nothing: it is no reference for a real run.
    await run_and_wait(client, acme, jv, {"mode": "snapshot", "dry_run": True, "force": True})
    assert (await run_and_wait(client, acme, jv, {"mode": "snapshot"}))["result"][
        "file_unchanged"
    ] is False
    await client.put(
        f"/feeds/{ids['feed_id']}/file",
        data=(H + "A,a,1,USD\n").encode(),
        headers={**acme, "Content-Type": "text/csv"},
    )
    changed = await run_and_wait(client, acme, jv, {"mode": "snapshot"})
    assert changed["result"]["file_unchanged"] is False and changed["result"]["deleted"] == 1


async def test_missing_file_fails_clearly(client, acme, consumer, settings):
    from service.core.s3 import s3_client

    ids = await upload_feed(client, acme, (H + "A,a,1,USD\n").encode())
    feed = await (await client.get(f"/feeds/{ids['feed_id']}", headers=acme)).json()
    bucket, key = feed["s3_uri"][5:].split("/", 1)
    async with s3_client(settings) as s3:
        await s3.delete_object(Bucket=bucket, Key=key)
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "FILE_NOT_FOUND"


async def test_two_runs_of_one_feed_never_merge_at_once(client, acme, consumer, db):
    """While another run of the feed holds the feed's lock (a zombie whose lease expired,
    say), a run waits: it writes nothing until the lock is released."""
    ids = await upload_feed(client, acme, (H + "A,a,1,USD\n").encode())
    jv = ids["validation_job_id"]
    first, second = await asyncio.gather(
        client.post(f"/jobs/{jv}/run", headers=acme), client.post(f"/jobs/{jv}/run", headers=acme)
    )
    assert sorted([first.status, second.status]) == [202, 409]
    await wait_terminal(client, acme, jv)
    await client.put(
        f"/feeds/{ids['feed_id']}/file",
        data=(H + "A,a2,1,USD\n").encode(),
        headers={**acme, "Content-Type": "text/csv"},
    )
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", ids["feed_id"])
        await client.post(f"/jobs/{jv}/run", headers=acme)
        await asyncio.sleep(1.5)
        job = await (await client.get(f"/jobs/{jv}", headers=acme)).json()
        assert job["status"] == "running"
        assert await db.fetchval("SELECT name FROM products WHERE sku = 'A'") == "a"
        await tx.rollback()
    job = await wait_terminal(client, acme, jv)
    assert job["status"] == "completed" and job["result"]["updated"] == 1


async def test_different_feeds_run_in_parallel(client, acme, consumer, db):
    rows = "".join(f"S-{i},n,1,USD\n" for i in range(100000)).encode()
    a = await upload_feed(client, acme, H.encode() + rows)
    b = await upload_feed(client, acme, H.encode() + rows)
    ja, jb = await asyncio.gather(
        run_and_wait(client, acme, a["validation_job_id"]),
        run_and_wait(client, acme, b["validation_job_id"]),
    )
    assert ja["result"]["inserted"] == jb["result"]["inserted"] == 100000
    runs = await db.fetch("SELECT started_at, finished_at FROM job_runs ORDER BY started_at")
    assert runs[1]["started_at"] < runs[0]["finished_at"]  # they overlapped


async def test_rejections_are_kept_for_the_latest_run_only(client, acme, consumer, db):
    ids = await upload_feed(client, acme, b"sku,name,price,currency\nA-1,Cap,abc,USD\n")
    jv = ids["validation_job_id"]
    first = await run_and_wait(client, acme, jv)
    assert first["result"]["rows_rejected"] == 1
    errors = await (await client.get(f"/jobs/{jv}/errors", headers=acme)).json()
    assert [(e["line"], e["code"]) for e in errors["errors"]] == [(2, "INVALID_PRICE")]
    resp = await client.put(
        f"/feeds/{ids['feed_id']}/file",
        data=b"sku,name,price,currency\nA-1,Cap,1.00,USD\n",
        headers={**acme, "Content-Type": "text/csv"},
    )
    assert resp.status == 201
    second = await run_and_wait(client, acme, jv)
    assert second["attempt"] == 2 and second["result"]["rows_rejected"] == 0
    errors = await (await client.get(f"/jobs/{jv}/errors", headers=acme)).json()
    assert errors == {"job_id": jv, "attempt": 2, "errors": [], "next_cursor": None}
    assert await db.fetchval("SELECT count(*) FROM job_errors WHERE job_id = $1", jv) == 0


async def test_a_feed_with_1700_unknown_columns_loads_them_ignored(client, acme, consumer, db):
    extra = [f"extra_{i}" for i in range(1700)]
    header = ",".join(["sku", *extra, "name", "price", "currency"])
    rows = [",".join([f"W-{n}", *["v"] * 1700, "Wide", "1.00", "USD"]) for n in range(3)]
    data = (header + "\n" + "\n".join(rows) + "\n").encode()
    ids = await upload_feed(client, acme, data)
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    # Kept, they would be more attributes than the limit: the run says so, writing nothing.
    assert job["status"] == "failed" and job["error"]["code"] == "TOO_MANY_ATTRIBUTES", job
    assert job["error"]["details"] == {"attributes": 1700, "limit": 200}
    job = await run_and_wait(client, acme, ids["validation_job_id"], {"unknown_columns": "ignore"})
    assert job["status"] == "completed", job
    assert job["result"]["inserted"] == 3 and len(job["result"]["ignored_columns"]) == 1700
    assert await db.fetchval("SELECT count(*) FROM products WHERE name = 'Wide'") == 3
