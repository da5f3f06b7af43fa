"""What each run changed: the run's change list (``GET /jobs/{id}/changes``), the feed's
change feed across runs (``GET /feeds/{id}/changes``) and the ``feed.changed`` event, as
the loads record them in their own transactions (service/core/store/changes.py)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import time
from typing import Any

import msgspec
import pytest

from service.core.contracts import FeedChangedEvent, FeedChangedHook
from tests.integration.conftest import run_and_wait, upload_feed

HEADER = "sku,name,price,currency,color"


def feed(rows: dict[str, tuple[str, str]]) -> bytes:
    """A feed of sku -> (price, color)."""
    lines = [HEADER] + [f"{sku},Item {sku},{p},EUR,{c}" for sku, (p, c) in rows.items()]
    return ("\n".join(lines) + "\n").encode()


FIRST = {f"S{n:03d}": (f"{n}.00", "red") for n in range(1, 121)}


async def put_file(client, acme, ids, data: bytes) -> None:
    resp = await client.put(
        f"/feeds/{ids['feed_id']}/file", data=data, headers={**acme, "Content-Type": "text/csv"}
    )
    assert resp.status == 201, await resp.text()


async def load(client, acme, ids, data: bytes, **options: Any) -> dict[str, Any]:
    await put_file(client, acme, ids, data)
    job = await run_and_wait(client, acme, ids["validation_job_id"], options or None)
    assert job["status"] == "completed", job
    return job


async def run_changes(client, acme, job_id: str, query: str = "", limit: int = 7) -> list[Any]:
    """Every change of a run, page after page (``limit`` a page, cursors followed)."""
    out: list[Any] = []
    cursor = ""
    while True:
        sep = "&" if query else ""
        url = f"/jobs/{job_id}/changes?{query}{sep}limit={limit}{cursor}"
        resp = await client.get(url, headers=acme)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        out += body["changes"]
        assert len(body["changes"]) <= limit
        if body["next_cursor"] is None:
            return out
        cursor = f"&cursor={body['next_cursor']}"


@pytest.fixture(params=["recognising", "staged"])
async def path_consumer(request, consumer, settings):
    """The consumer on the recognising path (the default) or the staged one."""
    consumer.deps.settings = msgspec.structs.replace(
        settings, recognise_rows=request.param == "recognising"
    )
    yield consumer
    consumer.deps.settings = settings


async def test_a_re_run_lists_exactly_what_it_changed(client, acme, path_consumer):
    ids = await upload_feed(client, acme, feed(FIRST))
    first = await run_and_wait(client, acme, ids["validation_job_id"])
    assert first["result"]["changes_url"] == f"/jobs/{ids['validation_job_id']}/changes?run=1"
    # A first load: every product inserted, in sku order, over pages.
    inserted = await run_changes(client, acme, ids["validation_job_id"])
    assert inserted == [{"sku": s, "change": "inserted"} for s in sorted(FIRST)]
    # 1% and a bit: a price, an attribute, a new sku.
    second = dict(FIRST, S005=("5.50", "red"), S009=("9.00", "blue"), S200=("1.00", "red"))
    job = await load(client, acme, ids, feed(second))
    assert (job["result"]["inserted"], job["result"]["updated"]) == (1, 2)
    assert job["attempt"] == 2
    changed = await run_changes(client, acme, ids["validation_job_id"])
    assert sorted(changed, key=lambda c: c["sku"]) == [
        {"sku": "S005", "change": "updated", "columns": ["price"]},
        {"sku": "S009", "change": "updated", "columns": ["attributes.color"]},
        {"sku": "S200", "change": "inserted"},
    ]
    page = await (
        await client.get(f"/jobs/{ids['validation_job_id']}/changes", headers=acme)
    ).json()
    assert page["run"] == 2 and page["status"] == "completed"
    assert page["counts"] == {"inserted": 1, "updated": 2, "revived": 0, "deleted": 0}
    # The earlier run's list is still there, by its number.
    again = await run_changes(client, acme, ids["validation_job_id"], "run=1", limit=1000)
    assert len(again) == len(FIRST)
    # An identical re-run changed nothing and says so.
    same = await load(client, acme, ids, feed(second), force=True)
    assert same["result"].get("changes_url") is None
    assert await run_changes(client, acme, ids["validation_job_id"]) == []


async def test_snapshot_deletions_and_revivals_appear(client, acme, path_consumer):
    ids = await upload_feed(client, acme, feed(FIRST), "?mode=snapshot")
    await run_and_wait(client, acme, ids["validation_job_id"])
    fewer = {s: v for s, v in FIRST.items() if s not in ("S010", "S011", "S012")}
    job = await load(client, acme, ids, feed(fewer))
    assert job["result"]["deleted"] == 3
    deleted = await run_changes(client, acme, ids["validation_job_id"])
    assert sorted((c["sku"], c["change"]) for c in deleted) == [
        ("S010", "deleted"),
        ("S011", "deleted"),
        ("S012", "deleted"),
    ]
    back = dict(fewer, S010=FIRST["S010"], S011=("11.00", "green"))
    await load(client, acme, ids, feed(back))
    revived = await run_changes(client, acme, ids["validation_job_id"])
    assert sorted(revived, key=lambda c: c["sku"]) == [
        {"sku": "S010", "change": "revived", "columns": []},
        {"sku": "S011", "change": "revived", "columns": ["attributes.color"]},
    ]
    page = await (
        await client.get(f"/jobs/{ids['validation_job_id']}/changes", headers=acme)
    ).json()
    assert page["counts"] == {"inserted": 0, "updated": 0, "revived": 2, "deleted": 0}


async def follow(client, acme, feed_id: str, since: str, limit: int) -> tuple[list[Any], str]:
    """The feed's changes from ``since`` to its end, page after page."""
    out: list[Any] = []
    while True:
        resp = await client.get(
            f"/feeds/{feed_id}/changes?since={since}&limit={limit}", headers=acme
        )
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        out += body["changes"]
        if body["changes"]:
            assert body["next_cursor"] == body["changes"][-1]["cursor"]
        since = body["next_cursor"]
        if not body["more"]:
            return out, since


async def test_the_change_feed_followed_from_0_reproduces_the_products_table(
    client, acme, consumer, db
):
    ids = await upload_feed(client, acme, feed(FIRST), "?mode=snapshot")
    await run_and_wait(client, acme, ids["validation_job_id"])
    second = {s: v for s, v in FIRST.items() if s != "S050"}
    second.update(S001=("0.50", "red"), S300=("3.00", "red"))
    await load(client, acme, ids, feed(second))
    third = dict(second, S050=FIRST["S050"], S002=("2.00", "black"))
    del third["S300"]
    await load(client, acme, ids, feed(third))
    # A downstream copy built from the change feed alone, in pages of 9 (the first load's
    # 120 inserts are one recorded row, read out in sku order across pages).
    changes, cursor = await follow(client, acme, ids["feed_id"], "0", 9)
    copy: dict[str, Any] = {}
    for c in changes:
        copy[c["sku"]] = c["product"]
    rows = await db.fetch(
        "SELECT sku, price::text AS price, attributes::text AS attributes,"
        " deleted_at IS NOT NULL AS deleted FROM products WHERE feed_id = $1",
        ids["feed_id"],
    )
    assert {r["sku"]: (r["price"], json.loads(r["attributes"]), r["deleted"]) for r in rows} == {
        s: (p["price"], p["attributes"], p["deleted_at"] is not None) for s, p in copy.items()
    }
    kinds = [(c["run"], c["change"]) for c in changes]
    assert kinds.count((1, "inserted")) == len(FIRST)
    later = [
        (2, "deleted"),  # S050
        (2, "updated"),  # S001
        (2, "inserted"),  # S300
        (3, "revived"),  # S050
        (3, "updated"),  # S002
        (3, "deleted"),  # S300
    ]
    assert sorted(k for k in kinds if k[0] > 1) == sorted(later)
    # Caught up: nothing more; a long poll is answered by the next run's commit.
    assert (await follow(client, acme, ids["feed_id"], cursor, 9))[0] == []
    started = time.monotonic()
    poll = asyncio.create_task(
        client.get(f"/feeds/{ids['feed_id']}/changes?since={cursor}&wait=30", headers=acme)
    )
    await asyncio.sleep(0.5)
    assert not poll.done()
    await load(client, acme, ids, feed(dict(third, S003=("3.33", "red"))))
    body = await (await poll).json()
    assert time.monotonic() - started < 25
    assert [(c["sku"], c["change"], c["columns"]) for c in body["changes"]] == [
        ("S003", "updated", ["price"])
    ]
    assert body["changes"][0]["product"]["price"] == "3.33"


async def test_a_run_s_changes_download_as_json_lines_and_csv(client, acme, consumer):
    rows = dict(FIRST, **{"-S1": ("1.00", "red")})
    ids = await upload_feed(client, acme, feed(rows))
    await run_and_wait(client, acme, ids["validation_job_id"])
    url = f"/jobs/{ids['validation_job_id']}/changes"
    lines = await client.get(url, headers={**acme, "Accept": "application/x-ndjson"})
    assert lines.headers["Content-Type"].startswith("application/jsonl")
    decoded = [json.loads(line) for line in (await lines.text()).splitlines()]
    assert decoded == [{"sku": s, "change": "inserted"} for s in sorted(rows)]
    table = await client.get(url, headers={**acme, "Accept": "text/csv"})
    assert table.headers["Content-Type"].startswith("text/csv")
    read = list(csv.reader(io.StringIO(await table.text())))
    assert read[0] == ["sku", "change", "columns"]
    assert len(read) == len(rows) + 1
    assert read[1] == ["'-S1", "inserted", ""]  # a formula neutralised, as in /errors


async def test_feed_changed_is_published_and_delivered_as_documented(client, acme, consumer, db):
    hook = await client.post(
        "/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["feed.changed"]},
        headers=acme,
    )
    assert hook.status == 201, await hook.text()
    ids = await upload_feed(client, acme, feed(FIRST))
    await run_and_wait(client, acme, ids["validation_job_id"])
    await load(client, acme, ids, feed(dict(FIRST, S001=("9.99", "red"))))
    await load(client, acme, ids, feed(dict(FIRST, S001=("9.99", "red"))), force=True)
    events = await db.fetch(
        "SELECT body FROM outbox WHERE routing_key = 'feed.changed' ORDER BY id"
    )
    strict = msgspec.defstruct(
        "Strict", [], bases=(FeedChangedEvent,), forbid_unknown_fields=True, kw_only=True
    )
    decoded = [msgspec.json.decode(bytes(r["body"]), type=strict) for r in events]
    # One per run that changed the feed: the unchanged third run publishes none.
    assert [(e.run, e.inserted, e.updated) for e in decoded] == [(1, len(FIRST), 0), (2, 0, 1)]
    second = decoded[1]
    assert second.links.changes == f"/jobs/{ids['validation_job_id']}/changes?run=2"
    # Its cursor range is exactly the run's changes on the change feed.
    page = await (
        await client.get(
            f"/feeds/{ids['feed_id']}/changes?since={second.cursor_from}", headers=acme
        )
    ).json()
    assert [(c["sku"], c["run"]) for c in page["changes"]] == [("S001", 2)]
    assert page["next_cursor"] == second.cursor_to and not page["more"]
    # The webhook that asked for feed.changed has one delivery per event, same data.
    bodies = await db.fetch(
        "SELECT body FROM webhook_deliveries WHERE event_type = 'feed.changed' ORDER BY seq"
    )
    hooks = [msgspec.json.decode(r["body"], type=FeedChangedHook) for r in bodies]
    assert [(h.data.run, h.data.updated, h.data.cursor_to) for h in hooks] == [
        (e.run, e.updated, e.cursor_to) for e in decoded
    ]


async def test_what_cannot_be_listed_says_why(client, acme, globex, consumer, settings):
    ids = await upload_feed(client, acme, feed(FIRST))
    job_id = ids["validation_job_id"]
    never = await client.get(f"/jobs/{job_id}/changes", headers=acme)
    assert never.status == 404 and (await never.json())["error_code"] == "RUN_NOT_FOUND"
    await run_and_wait(client, acme, job_id)
    missing = await client.get(f"/jobs/{job_id}/changes?run=7", headers=acme)
    assert missing.status == 404
    bad = await client.get(f"/feeds/{ids['feed_id']}/changes?since=nonsense", headers=acme)
    assert bad.status == 400 and (await bad.json())["details"]["field"] == "since"
    # Cursors this API never hands out: past bigint, negative, a NUL in the sku.
    for forged in (b'[99999999999999999999,""]', b'[-1,""]', b'[1,"a\\u0000"]'):
        cursor = base64.urlsafe_b64encode(forged).decode().rstrip("=")
        for url in (
            f"/feeds/{ids['feed_id']}/changes?since={cursor}",
            f"/jobs/{job_id}/changes?cursor={cursor}",
        ):
            resp = await client.get(url, headers=acme)
            assert resp.status == 400, (forged, url, await resp.text())
    other = await client.get(f"/jobs/{job_id}/changes", headers=globex)
    assert other.status == 404
    # A dry run changes nothing: an empty list, no link.
    dry = await run_and_wait(client, acme, job_id, {"dry_run": True, "force": True})
    assert dry["result"].get("changes_url") is None
    assert await run_changes(client, acme, job_id) == []
    # With RECORD_CHANGES off, a run that changed products says its list was not recorded.
    consumer.deps.settings = msgspec.structs.replace(settings, record_changes=False)
    try:
        job = await load(client, acme, ids, feed(dict(FIRST, S001=("7.00", "red"))))
    finally:
        consumer.deps.settings = settings
    assert job["result"]["updated"] == 1 and job["result"].get("changes_url") is None
    off = await client.get(f"/jobs/{job_id}/changes", headers=acme)
    assert off.status == 409 and (await off.json())["error_code"] == "CHANGES_NOT_RECORDED"
