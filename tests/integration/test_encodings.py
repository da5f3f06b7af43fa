"""Feeds in the encodings merchants really send (consumer/transcode.py): Windows-1252 (the
most common complaint: every accented row used to be rejected INVALID_ENCODING),
ISO-8859-1 and UTF-16 round-trip, ``auto`` finds each and says so in the result, and a
UTF-8 feed with a stray byte says which ``encoding`` to try."""

from __future__ import annotations

import codecs

import pytest

from tests.integration.conftest import run_and_wait, upload_feed

ROWS = [
    ("A-1", "Café crème brûlée", "1.50", "EUR"),
    ("A-2", "Naïve façade — “quoted” €", "2.00", "EUR"),
    ("A-3", "Smörgåsbord Ångström", "3.25", "SEK"),
    ("A-4", "plain ascii", "4.00", "USD"),
]
LATIN1_ROWS = [r for r in ROWS if all(ord(c) < 256 for c in r[1])]


def _tsv(rows) -> str:
    return "sku\tname\tprice\tcurrency\n" + "".join("\t".join(r) + "\n" for r in rows)


async def _names(db, feed_id: str) -> dict[str, str]:
    rows = await db.fetch("SELECT sku, name FROM products WHERE feed_id = $1", feed_id)
    return {r["sku"]: r["name"] for r in rows}


CASES = [
    ("windows-1252", ROWS, lambda t: t.encode("cp1252")),
    ("iso-8859-1", LATIN1_ROWS, lambda t: t.encode("latin-1")),
    ("utf-16", ROWS, lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le")),
    ("utf-8", ROWS, lambda t: codecs.BOM_UTF8 + t.encode("utf-8")),
]


@pytest.mark.parametrize(("encoding", "rows", "encode"), CASES, ids=[c[0] for c in CASES])
async def test_each_encoding_round_trips_declared_and_found(
    client, acme, consumer, db, encoding, rows, encode
):
    data = encode(_tsv(rows))
    for declared in (encoding, "auto"):
        ids = await upload_feed(
            client, acme, data, f"?delimiter=tab&encoding={declared}&name={declared}"
        )
        job = await run_and_wait(client, acme, ids["validation_job_id"])
        r = job["result"]
        assert (r["rows_valid"], r["rows_rejected"]) == (len(rows), 0), job
        assert await _names(db, ids["feed_id"]) == {s: n for s, n, _, _ in rows}
        # ISO-8859-1 text decodes the same as Windows-1252, its superset: auto says so.
        found = "windows-1252" if encoding == "iso-8859-1" and declared == "auto" else encoding
        assert r["encoding"] == found, (declared, r)
        again = await run_and_wait(client, acme, ids["validation_job_id"], {"force": True})
        assert again["result"]["unchanged"] == len(rows)  # same text, same hashes


async def test_a_run_may_override_the_feeds_encoding(client, acme, consumer, db):
    data = _tsv(ROWS).encode("cp1252")
    ids = await upload_feed(client, acme, data, "?delimiter=tab")
    jv = ids["validation_job_id"]
    as_utf8 = (await run_and_wait(client, acme, jv))["result"]
    assert as_utf8["rows_rejected"] == 3  # the accented rows: not UTF-8
    page = await (await client.get(f"/jobs/{jv}/errors", headers=acme)).json()
    first = page["errors"][0]
    assert first["code"] == "INVALID_ENCODING" and "windows-1252" in first["message"]
    done = await run_and_wait(client, acme, jv, {"encoding": "windows-1252", "force": True})
    assert done["result"]["rows_valid"] == 4 and done["result"]["encoding"] == "windows-1252"
    assert await _names(db, ids["feed_id"]) == {s: n for s, n, _, _ in ROWS}


async def test_a_file_that_is_not_utf16_fails_and_writes_nothing(client, acme, consumer, db):
    bad = codecs.BOM_UTF16_LE + "sku,name,price,currency\n".encode("utf-16-le") + b"\x00\xd8"
    ids = await upload_feed(client, acme, bad, "?encoding=utf-16")
    job = await run_and_wait(client, acme, ids["validation_job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "INVALID_ENCODING", job
    assert job["error"]["details"]["encoding"] == "utf-16"
    assert await db.fetchval("SELECT count(*) FROM products") == 0


async def test_an_unknown_encoding_is_a_400_naming_it(client, acme):
    resp = await client.post(
        "/feeds?encoding=ebcdic", data=b"x", headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 400 and (await resp.json())["details"] == {"field": "encoding"}
    reg = await client.post(
        "/feeds", json={"s3_uri": "s3://feeds/x.csv", "encoding": "ebcdic"}, headers=acme
    )
    assert reg.status == 400 and (await reg.json())["details"]["field"] == "encoding"
