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
