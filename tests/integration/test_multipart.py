"""Multi-part feeds: a feed whose s3_uri is a prefix or a glob of part files (as Spark, BigQuery
or a merchant's export write them) loads all its parts as one version, in one transaction."""

from __future__ import annotations

import csv
import gzip
import io

import msgspec

from service.core.s3 import s3_client
from tests.conftest import wait_for
from tests.integration.conftest import allow_prefix, run_and_wait, running_consumer
from tests.integration.feeds import generate
from tests.integration.test_s3_events import _publish, aws_event

HEADER = b"sku,name,price,currency\n"


def rows(start: int, n: int, price: str = "1.50") -> bytes:
    return b"".join(f"P-{i},Item {i},{price},USD\n".encode() for i in range(start, start + n))


async def put(settings, key: str, body: bytes) -> str:
    async with s3_client(settings) as s3:
        resp = await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    return str(resp["ETag"]).strip('"')


async def delete(settings, key: str) -> None:
    async with s3_client(settings) as s3:
        await s3.delete_object(Bucket=settings.s3_bucket, Key=key)


async def register(client, acme, body: dict) -> dict:
    resp = await client.post("/feeds", json=body, headers=acme)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def live(db, feed_id: str) -> dict[str, str]:
    found = await db.fetch(
        "SELECT sku, price::text FROM products WHERE feed_id = $1 AND deleted_at IS NULL",
        feed_id,
    )
    return {r["sku"]: r["price"] for r in found}


async def test_five_parts_load_as_one_snapshot(client, acme, consumer, settings, db):
    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/export/")
    bad = b"".join(f"B-{i},Broken,not-a-price,USD\n".encode() for i in range(40))
    parts = {
        "export/part-00001.csv": HEADER + rows(0, 100),
        "export/part-00002.csv.gz": gzip.compress(HEADER + rows(100, 100)),
        "export/part-00003.csv": HEADER + rows(200, 10) + bad,  # rejection-heavy
        "export/part-00004.csv": HEADER,  # a part with no rows
        "export/part-00005.csv": HEADER + rows(210, 50) + b"P-5,Again,9.99,USD\n",  # dup of part 1
    }
    for key, body in parts.items():
        await put(settings, key, body)
    await put(settings, "export/_SUCCESS", b"")  # a marker, not a part
    await put(settings, "export/other.txt", b"not matched")  # outside the glob
    ids = await register(
        client,
        acme,
        {"s3_uri": f"s3://{bucket}/export/part-*", "parts": True, "mode": "snapshot"},
    )
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    assert job["status"] == "completed", job
    result = job["result"]
    files = result["files"]
    assert [f["key"] for f in files] == [f"s3://{bucket}/{k}" for k in parts]
    assert [f["bytes"] for f in files] == [len(b) for b in parts.values()]
    assert [f["rows_read"] for f in files] == [100, 100, 50, 0, 51]
    assert [f["rows_rejected"] for f in files] == [0, 0, 40, 0, 1]
    # lines go on through the parts, each header counted: part k's line n is first_line + n - 1
    assert [f["first_line"] for f in files] == [1, 102, 203, 254, 255]
    assert result["rows_read"] == 301 and result["rows_rejected"] == 41
    assert result["inserted"] == 260
    assert len(await live(db, ids["feed_id"])) == 260
    errors = await (
        await client.get(f"/jobs/{ids['validation_job_id']}/errors?limit=1000", headers=acme)
    ).json()
    by_code = {e["code"] for e in errors["errors"]}
    assert by_code == {"INVALID_PRICE", "DUPLICATE_SKU"}
    dup = next(e for e in errors["errors"] if e["code"] == "DUPLICATE_SKU")
    assert dup["line"] == 255 + 51 and "P-5" in dup["raw"]  # the last line of part 5
    prices = [e["line"] for e in errors["errors"] if e["code"] == "INVALID_PRICE"]
    assert prices == list(range(214, 254))  # part 3's lines 12 to 51

    # The same set again: skipped like an unchanged file.
    again = await run_and_wait(client, acme, ids["validation_job_id"])
    assert again["result"]["file_unchanged"] and again["result"]["files"] == files

    # A new version of the set: part 2 gone, part 1 re-priced. One snapshot of the whole set:
    # part 2's 100 products deleted (within max_deleted_ratio), part 1's 100 updated.
    await delete(settings, "export/part-00002.csv.gz")
    await put(settings, "export/part-00001.csv", HEADER + rows(0, 100, "2.00"))
    third = await run_and_wait(client, acme, ids["validation_job_id"])
    r = third["result"]
    assert (r["updated"], r["deleted"], r["inserted"]) == (100, 100, 0), r
    assert len(r["files"]) == 4
    products = await live(db, ids["feed_id"])
    assert len(products) == 160 and products["P-0"] == "2.00" and "P-150" not in products


async def test_a_part_with_another_header_fails_and_writes_nothing(
    client, acme, consumer, settings, db
):
    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/mixed/")
    await put(settings, "mixed/a.csv", HEADER + rows(0, 5))
    await put(settings, "mixed/b.csv", b"sku,price,name,currency\n" + b"X-1,1.00,X,USD\n")
    ids = await register(client, acme, {"s3_uri": f"s3://{bucket}/mixed/", "parts": True})
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "INVALID_HEADER", job
    assert job["error"]["details"]["part"] == 2
    assert await live(db, ids["feed_id"]) == {}


async def test_a_part_that_disappears_mid_run_fails_file_changed(
    client, acme, consumer, settings, db, tmp_path
):
    """A snapshot of five parts, part 3 rejection-heavy, part 5 deleted while part 1 is read:
    the run fails FILE_CHANGED and the products stay those of the previous version."""
    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/big/")
    data, _ = generate(tmp_path, 150_020)  # cut into parts, each with the header
    header, *lines = data.splitlines(keepends=True)
    names = next(csv.reader([header.decode()]))
    template = next(csv.reader([lines[0].decode()]))
    broken = io.StringIO()
    for i in range(500):
        row = dict(zip(names, template, strict=True), sku=f"B-{i}", price="not-a-price")
        csv.writer(broken, lineterminator="\n").writerow(row[n] for n in names)
    tail = lines[150_000:]
    parts = {
        "big/p1.csv": header + b"".join(lines[:150_000]),
        "big/p2.csv": header + b"".join(tail[0:5]),
        "big/p3.csv": header + b"".join(tail[5:10]) + broken.getvalue().encode(),
        "big/p4.csv": header + b"".join(tail[10:15]),
        "big/p5.csv": header + b"".join(tail[15:20]),
    }
    for key, body in parts.items():
        await put(settings, key, body)
    ids = await register(
        client, acme, {"s3_uri": f"s3://{bucket}/big/*.csv", "parts": True, "mode": "snapshot"}
    )
    jv = ids["validation_job_id"]
    done = await run_and_wait(client, acme, jv)
    assert done["status"] == "completed" and done["result"]["files"][2]["rows_rejected"] == 500
    before = await live(db, ids["feed_id"])
    assert len(before) == 150_020
    await put(settings, "big/p2.csv", header + b"".join(tail[0:4]))  # a new version of the set
    assert (await client.post(f"/jobs/{jv}/run", headers=acme)).status == 202

    async def reading() -> bool:
        job = await (await client.get(f"/jobs/{jv}", headers=acme)).json()
        return job["status"] == "running" and (job["progress"] or {}).get("rows_read", 0) > 0

    await wait_for(reading, timeout=30, interval=0.01)
    await delete(settings, "big/p5.csv")  # listed at the start, read last
    job = await wait_for(lambda: _terminal(client, acme, jv), timeout=60)
    assert job["status"] == "failed" and job["error"]["code"] == "FILE_CHANGED", job
    assert "big/p5.csv" in job["error"]["details"]["s3_uri"]
    assert await live(db, ids["feed_id"]) == before  # nothing written, nothing deleted


async def _terminal(client, acme, jv):
    job = await (await client.get(f"/jobs/{jv}?wait=5", headers=acme)).json()
    return job if job["status"] in ("completed", "failed", "cancelled") else None


async def test_registration_is_checked(client, acme, settings, db):
    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/reg/")
    await put(settings, "reg/one.csv", HEADER + rows(0, 1))
    cases = [
        ({"s3_uri": f"s3://{bucket}/reg/one.csv", "parts": True}, "names the part files"),
        ({"s3_uri": f"s3://{bucket}/reg/*.csv"}, "set parts: true"),
        ({"s3_uri": f"s3://{bucket}/reg/*.tsv", "parts": True}, "No part file matches"),
        ({"s3_uri": f"s3://{bucket}/secret/*.csv", "parts": True}, "not readable"),
    ]
    for body, says in cases:
        resp = await client.post("/feeds", json=body, headers=acme)
        assert resp.status == 400, body
        error = await resp.json()
        assert says in error["message"] and error["details"]["field"] == "s3_uri", error


async def test_a_watched_set_runs_once_on_its_success_marker(client, acme, channel, settings, db):
    bucket = settings.s3_bucket
    await allow_prefix(db, "acme", f"s3://{bucket}/daily/")
    ids = await register(
        client, acme, {"s3_uri": f"s3://{bucket}/daily/part-*.csv", "parts": True, "watch": True}
    )
    jv = ids["validation_job_id"]
    quick = msgspec.structs.replace(settings, scheduler_tick_seconds=0.2)
    async with running_consumer(quick) as consumer:
        for n, key in enumerate(("daily/part-1.csv", "daily/part-2.csv"), 1):
            etag = await put(settings, key, HEADER + rows(n * 10, 3))
            await _publish(channel, settings, aws_event(bucket, key, 30, etag, f"0{n}"))
        etag = await put(settings, "daily/_SUCCESS", b"")
        await _publish(channel, settings, aws_event(bucket, "daily/_SUCCESS", 0, etag, "03"))

        async def runs():
            found = (await (await client.get(f"/jobs/{jv}/runs", headers=acme)).json())["runs"]
            return found if found and found[0]["status"] == "completed" else None

        history = await wait_for(runs, timeout=30)
        outcomes = {}
        for family in consumer.metrics.s3_events.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    outcomes[sample.labels["outcome"]] = sample.value
    assert outcomes == {"part": 2, "loaded": 1}
    assert len(history) == 1 and history[0]["requested_by"] == "s3_event"
    assert history[0]["result"]["inserted"] == 6 and len(history[0]["result"]["files"]) == 2
    feed = await (await client.get(f"/feeds/{ids['feed_id']}", headers=acme)).json()
    assert feed["s3_uri"] == f"s3://{bucket}/daily/part-*.csv"
