"""The parse worker's memory of stored rows and met skus, against plain-Python models."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer import known
from consumer.known import KnownRows, SeenSkus, parse_copy


def copy_bytes(rows: list[int], skus: list[int]) -> bytes:
    """What PostgreSQL writes for COPY (SELECT row_hash, sku_hash ...) (FORMAT binary)."""
    body = b"".join(
        (2).to_bytes(2, "big")
        + (8).to_bytes(4, "big")
        + r.to_bytes(8, "big", signed=True)
        + (8).to_bytes(4, "big")
        + s.to_bytes(8, "big", signed=True)
        for r, s in zip(rows, skus, strict=True)
    )
    return known.COPY_SIGNATURE + b"\0" * 8 + body + b"\xff\xff"


hashes = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=100)
@given(st.lists(st.tuples(hashes, hashes), max_size=50), st.integers(1, 40))
def test_binary_copy_is_read_whatever_the_chunks(pairs, size):
    data = copy_bytes([p[0] for p in pairs], [p[1] for p in pairs])
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    rows, skus = parse_copy(iter(chunks))
    assert rows.tolist() == [p[0] for p in pairs] and skus.tolist() == [p[1] for p in pairs]


def test_a_cut_copy_stream_is_refused():
    data = copy_bytes([1, 2], [3, 4])
    with pytest.raises(ValueError):
        parse_copy(iter([data[:-5]]))
    assert [a.tolist() for a in parse_copy(iter([]))] == [[], []]  # nothing sent: nothing stored


@settings(max_examples=200)
@given(st.lists(st.integers(0, 30), max_size=200), st.integers(1, 9))
def test_met_skus_name_their_first_line_like_a_dict(skus, block):
    seen = SeenSkus()
    model: dict[int, int] = {}
    line = 2
    old, known.MAX_RUN = known.MAX_RUN, 8  # small runs: capped merges are exercised too
    try:
        for start in range(0, len(skus), block):
            part = skus[start : start + block]
            lines = np.arange(line, line + len(part), dtype=np.uint32)
            first = seen.first_seen(np.array(part, np.int64), lines)
            expected = []
            for sku, at in zip(part, lines.tolist(), strict=True):
                expected.append(model.setdefault(sku, at))
            assert first.tolist() == expected
            line += len(part)
    finally:
        known.MAX_RUN = old
    assert len(seen) == len(model)


def test_stored_rows_are_found_by_row_and_by_sku_and_the_gone_are_listed():
    stored = KnownRows(np.array([30, 10, 20], np.int64), np.array([3, 1, 2], np.int64))
    assert stored.nbytes == 3 * 24
    rows = stored.match_rows(np.array([20, 99, 10], np.int64))
    assert [int(stored.rows[i]) if i >= 0 else None for i in rows] == [20, None, 10]
    skus = stored.match_skus(np.array([1, 7, 3], np.int64))  # the stored rows of skus 1 and 3
    assert [int(stored.rows[i]) if i >= 0 else None for i in skus] == [10, None, 30]
    index = stored.match_rows(np.array([20, 20], np.int64))
    assert stored.first_seen(index, np.array([5, 9], np.uint32)).tolist() == [5, 5]
    assert sorted(stored.gone().tolist()) == [10, 30]  # never met: sku hashes 1 and 3


def test_nothing_stored_finds_nothing():
    empty = KnownRows(np.empty(0, np.int64), np.empty(0, np.int64))
    probe = np.array([1, 2], np.int64)
    assert empty.match_rows(probe).tolist() == empty.match_skus(probe).tolist() == [-1, -1]
    assert empty.gone().tolist() == [] and empty.nbytes == 0


@settings(max_examples=100)
@given(st.lists(st.tuples(hashes, hashes), max_size=60, unique_by=lambda p: p[1]))
def test_a_packed_set_reads_like_the_copy_of_the_same_rows(pairs):
    rows = [p[0] for p in pairs]
    skus = [p[1] for p in pairs]
    packed = known.pack_pairs(np.array(rows, np.int64), np.array(skus, np.int64))
    parts = [packed[i : i + 32] for i in range(0, len(packed), 32)]  # whole pairs each
    from_set = known.parse_stored(iter([known.SET_SIGNATURE, *parts]))
    from_copy = known.parse_stored(iter([copy_bytes(rows, skus)]))
    assert [a.tolist() for a in from_set] == [a.tolist() for a in from_copy] == [rows, skus]
    with pytest.raises(ValueError):
        known.parse_stored(iter([known.SET_SIGNATURE, b"\0" * 17]))


@settings(max_examples=100)
@given(
    # A row hash names its sku too (the canonical line starts with it): both unique.
    st.lists(st.tuples(hashes, hashes), max_size=60, unique_by=(lambda p: p[0], lambda p: p[1])),
    st.data(),
    st.booleans(),
)
def test_the_stored_rows_kept_are_all_but_the_replaced_and_a_snapshots_unseen(
    pairs, data, snapshot
):
    stored = KnownRows(
        np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)
    )
    # Some stored rows were met again in the file (their sku), some of those replaced.
    met = data.draw(st.sets(st.sampled_from(pairs))) if pairs else set()
    replaced = data.draw(st.sets(st.sampled_from(sorted(met)))) if met else set()
    for row, _ in met:
        [at] = stored.match_rows(np.array([row], np.int64)).tolist()
        stored.first_line[at] = 7
    index = stored.match_rows(np.array([r for r, _ in replaced], np.int64))
    parts = list(stored.kept(index.astype(np.intp), snapshot=snapshot))
    assert len(parts) == stored.kept_parts()
    got = np.frombuffer(b"".join(parts), known.PAIRS)
    expected = {p for p in pairs if p not in replaced and (p in met or not snapshot)}
    assert set(zip(got["row"].tolist(), got["sku"].tolist(), strict=True)) == expected
    assert len(got) == len(expected)
