"""GET /jobs/{id}/errors with Accept: text/csv: every rejection, streamed in flat memory."""

from __future__ import annotations

import csv
import io
import tracemalloc

from tests.integration.conftest import run_and_wait, upload_feed

ROWS = 100_000


async def test_a_100k_rejection_report_streams_in_flat_memory(client, acme, consumer):
    body = "sku,name,price,currency\n" + "".join(
        f"bad sku {i},Thing {i},{i}.00,USD\n" for i in range(ROWS)
    )
    ids = await upload_feed(client, acme, body.encode())
    jv = ids["validation_job_id"]
    job = await run_and_wait(client, acme, jv)
    assert job["result"]["rows_rejected"] == ROWS
    assert job["result"]["rejections_url"] == f"/jobs/{jv}/errors"
    tracemalloc.start()
    try:
        resp = await client.get(f"/jobs/{jv}/errors", headers={**acme, "Accept": "text/csv"})
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
        assert "Content-Length" not in resp.headers  # streamed, not built in memory
        lines = 0
        first: list[str] = []
        size = 0
        pending = b""
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\r\n")
            if not first and complete:
                first = [complete[0].decode(), complete[1].decode()]
            lines += len(complete)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == ROWS + 1 and pending == b""
    header, row = (next(csv.reader(io.StringIO(x))) for x in first)
    assert header == ["line", "column", "code", "message", "raw"]
    assert row[:3] == ["2", "sku", "INVALID_SKU"] and row[4] == "bad sku 0,Thing 0,0.00,USD"
    # The report is about 13 MB; client and server together never held 5 MB of it (a
    # report built in memory would peak above its own size).
    assert size > 10_000_000 and peak < 5_000_000, (size, peak)


async def test_formula_cells_are_neutralised_in_csv_and_kept_raw_in_json(client, acme, consumer):
    body = (
        "sku,name,price,currency\n"
        '=HYPERLINK("http://x"),Thing,1.00,USD\n'
        "@SUM(A1),Thing,1.00,USD\n"
        "-2+3,Thing,1.00,USD\n"
        "+A1,Thing,1.00,USD\n"
        "ok-1,Thing,not-a-price,USD\n"
    )
    ids = await upload_feed(client, acme, body.encode())
    jv = ids["validation_job_id"]
    job = await run_and_wait(client, acme, jv)
    assert job["result"]["rows_rejected"] == 5
    resp = await client.get(f"/jobs/{jv}/errors", headers={**acme, "Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    raws = [r["raw"] for r in rows]
    assert raws[:4] == [
        '\'=HYPERLINK("http://x"),Thing,1.00,USD',
        "'@SUM(A1),Thing,1.00,USD",
        "'-2+3,Thing,1.00,USD",
        "'+A1,Thing,1.00,USD",
    ]
    assert raws[4] == "ok-1,Thing,not-a-price,USD"  # nothing to neutralise
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
    page = await (await client.get(f"/jobs/{jv}/errors", headers=acme)).json()
    assert page["errors"][0]["raw"] == '=HYPERLINK("http://x"),Thing,1.00,USD'
