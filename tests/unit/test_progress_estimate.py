"""The rows a run reports as read are matched to the bytes behind them, so the estimate
``Loading: N of ~M rows`` is right from the first batch (it was ~34,193 of a 100,000-row
file: the bytes sent to the worker run ahead of the rows it has read)."""

from __future__ import annotations

import gzip
import io

import pytest

from consumer.frames import Batch, WorkerConfig, decoder
from consumer.parse_worker import process

ROWS = 60_000


def _batches(data: bytes, cfg: WorkerConfig) -> list[Batch]:
    out = io.BytesIO()
    process(io.BytesIO(data), out, cfg)
    raw, frames = out.getvalue(), []
    while raw:
        size = int.from_bytes(raw[:4], "big")
        frames.append(decoder.decode(raw[4 : 4 + size]))
        raw = raw[4 + size :]
    return [f for f in frames if isinstance(f, Batch)]


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("fast_path", [True, False])
def test_every_batch_estimates_the_row_count_within_3_percent(packed, fast_path):
    body = b"sku,name,price,currency\n" + b"".join(
        b"SKU-%06d,Thing number %d,%d.50,USD\n" % (i, i, i % 1000) for i in range(ROWS)
    )
    data = gzip.compress(body) if packed else body
    cfg = WorkerConfig(fast_path=fast_path, read_bytes=256 * 1024, batch_rows=4000)
    batches = _batches(data, cfg)
    assert len(batches) >= 3  # the fast path sends a batch a block
    for b in batches:
        assert 0 < b.bytes_parsed <= len(data)
        estimate = b.rows_read * len(data) / b.bytes_parsed
        assert abs(estimate - ROWS) / ROWS < 0.03, (b.rows_read, b.bytes_parsed, estimate)
