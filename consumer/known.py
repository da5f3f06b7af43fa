"""What the parse worker knows of the feed's stored rows, and of the skus it has seen.

``KnownRows`` holds the row hash and sku hash of every live product of the feed, sorted by
row hash, as numpy arrays: 8 + 8 bytes, plus 4 for the sku order and 4 for the first line
the sku was met on in this file: **24 bytes a stored product**. A row whose hash is among
them is unchanged and goes no further; the rest are staged. ``SeenSkus`` remembers the skus
met in this file that are not stored (first loads: all of them), so that a later occurrence
of a sku is rejected as ``DUPLICATE_SKU`` naming the first, wherever the two went.

Both answer a block of rows at a time, in line order, with vectorised lookups. At the end
of a run that changed the feed's hash set, ``KnownRows.kept`` sends the stored pairs that
stay, part by part (5 more bytes a product for that moment: which stay, and the sku of
each row).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

Int64s = npt.NDArray[np.int64]
UInt32s = npt.NDArray[np.uint32]
Indexes = npt.NDArray[np.intp]

# PostgreSQL's binary COPY of (bigint, bigint) rows: a 19-byte header, then per row a field
# count and two length-prefixed 8-byte values, then a -1 field count.
COPY_HEADER = 19
_TUPLE = np.dtype([("n", ">i2"), ("l1", ">i4"), ("row", ">i8"), ("l2", ">i4"), ("sku", ">i8")])
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


# A feed's packed hash set (service/core/store/hash_sets.py): (row_hash, sku_hash) pairs,
# 16 bytes each, after a first chunk that is this signature.
PAIRS = np.dtype([("row", "<i8"), ("sku", "<i8")])
SET_SIGNATURE = b"FJSET001"
PART_PAIRS = 256 * 1024  # pairs a part of the set holds (4 MiB)


def parse_stored(chunks: Iterator[bytes]) -> tuple[Int64s, Int64s]:
    """Row and sku hashes from either form the consumer sends: the feed's packed set
    (first chunk: ``SET_SIGNATURE``) or the chunks of a binary COPY."""
    first = next(chunks, None)
    if first is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)  # nothing stored: nothing sent
    if first == SET_SIGNATURE:
        return parse_pairs(chunks)
    return parse_copy(itertools.chain((first,), chunks))


def parse_pairs(chunks: Iterator[bytes]) -> tuple[Int64s, Int64s]:
    rows: list[Int64s] = []
    skus: list[Int64s] = []
    for chunk in chunks:
        if len(chunk) % PAIRS.itemsize:
            raise ValueError("a part of the hash set is not a whole number of pairs")
        pairs = np.frombuffer(chunk, PAIRS)
        rows.append(pairs["row"].astype(np.int64))
        skus.append(pairs["sku"].astype(np.int64))
    return _joined(rows), _joined(skus)


def pack_pairs(rows: Int64s, skus: Int64s) -> bytes:
    out = np.empty(len(rows), PAIRS)
    out["row"] = rows
    out["sku"] = skus
    return out.tobytes()


def parse_copy(chunks: Iterator[bytes]) -> tuple[Int64s, Int64s]:
    """Row and sku hashes from the chunks of ``COPY (SELECT row_hash, sku_hash ...) TO
    STDOUT (FORMAT binary)``, parsed as they come (memory: the arrays, not the bytes); no
    chunk at all means no stored row."""
    buf = bytearray()
    rows: list[Int64s] = []
    skus: list[Int64s] = []
    header_done = False
    for chunk in chunks:
        buf += chunk
        if not header_done:
            if len(buf) < COPY_HEADER:
                continue
            if not buf.startswith(COPY_SIGNATURE):
                raise ValueError("not a binary COPY stream")
            del buf[:COPY_HEADER]
            header_done = True
        if len(buf) >= 1 << 20:
            _take(buf, rows, skus)
    if not header_done and not buf:
        return np.empty(0, np.int64), np.empty(0, np.int64)  # nothing stored: nothing sent
    _take(buf, rows, skus)
    if not header_done or bytes(buf) != b"\xff\xff":
        raise ValueError("binary COPY stream cut short")
    return _joined(rows), _joined(skus)


def _joined(parts: list[Int64s]) -> Int64s:
    """One array of ``parts``, emptying the list as it goes (peak: the parts plus one)."""
    if not parts:
        return np.empty(0, np.int64)
    whole = np.concatenate(parts)
    parts.clear()
    return whole


def _take(buf: bytearray, rows: list[Int64s], skus: list[Int64s]) -> None:
    """Parse the whole tuples at the head of ``buf`` (what remains is a partial one, or
    the trailer)."""
    whole = len(buf) // _TUPLE.itemsize * _TUPLE.itemsize
    if not whole:
        return
    body = np.frombuffer(bytes(buf[:whole]), dtype=_TUPLE)
    if (body["n"] != 2).any() or (body["l1"] != 8).any() or (body["l2"] != 8).any():
        raise ValueError("unexpected binary COPY tuple")
    rows.append(body["row"].astype(np.int64))
    skus.append(body["sku"].astype(np.int64))
    del buf[:whole]


class KnownRows:
    def __init__(self, row_hashes: Int64s, sku_hashes: Int64s) -> None:
        """Takes the arrays over and sorts them in place (memory is the point here: at
        most 28 bytes a product while sorting, 24 once built)."""
        order = np.argsort(row_hashes).astype(np.uint32)
        row_hashes.sort()
        self.rows: Int64s = row_hashes
        skus = sku_hashes[order]
        del sku_hashes, order
        # Sku hashes sorted, and the stored row each is: a plain search finds a sku (numpy's
        # searchsorted with a ``sorter`` checks the whole sorter on every call).
        by_sku = np.argsort(skus)
        self.sku_rows: UInt32s = by_sku.astype(np.uint32)
        del by_sku
        skus.sort()
        self.skus: Int64s = skus
        self.first_line: UInt32s = np.zeros(len(self.rows), np.uint32)

    @classmethod
    def from_chunks(cls, chunks: Iterator[bytes]) -> KnownRows:
        pair = list(parse_stored(chunks))
        return cls(pair.pop(0), pair.pop(0))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.rows, self.skus, self.sku_rows, self.first_line))

    def match_rows(self, hashes: Int64s) -> Indexes:
        """The stored index of each row hash, or -1."""
        return _lookup(self.rows, hashes)

    def match_skus(self, hashes: Int64s) -> Indexes:
        """The stored index of each sku hash, or -1."""
        at = _lookup(self.skus, hashes)
        if not len(self.skus):
            return at  # all -1
        result: Indexes = np.where(at >= 0, self.sku_rows[at].astype(np.intp), -1)
        return result

    def first_seen(self, index: Indexes, lines: UInt32s) -> UInt32s:
        """For rows (in line order) of stored skus ``index``: the line each sku was first
        met on in this file, recording the ones met now (a row is a duplicate when that
        line is not its own)."""
        return _first_seen(self.first_line, index, lines)

    def kept(self, replaced: Indexes, *, snapshot: bool) -> Iterator[bytes]:
        """The stored products that stay after this run, as packed pairs in parts of at
        most ``PART_PAIRS``: all but the ``replaced`` ones (a row of their sku was written)
        and, for a snapshot, but the ones whose sku the file never held. One part per
        ``PART_PAIRS`` stored products (see ``kept_parts``), some perhaps empty."""
        n = len(self.rows)
        keep = np.ones(n, np.bool_)
        keep[replaced] = False
        if snapshot:
            keep &= self.first_line != 0
        # The sku of each row: the inverse of the sku order (4 bytes a product, for now).
        sku_at = np.empty(n, np.uint32)
        sku_at[self.sku_rows] = np.arange(n, dtype=np.uint32)
        for start in range(0, n, PART_PAIRS):
            part = keep[start : start + PART_PAIRS]
            yield pack_pairs(
                self.rows[start : start + PART_PAIRS][part],
                self.skus[sku_at[start : start + PART_PAIRS][part]],
            )

    def kept_parts(self) -> int:
        return -(-len(self.rows) // PART_PAIRS)

    def gone(self) -> Int64s:
        """Row hashes of the stored products whose sku the file never held."""
        result: Int64s = self.rows[self.first_line == 0]
        return result


def _lookup(sorted_keys: Int64s, keys: Int64s) -> Indexes:
    if not len(sorted_keys) or not len(keys):
        return np.full(len(keys), -1, np.intp)
    # Queries in order: neighbouring binary searches then share their path through the
    # array (cache hits), about 3x faster than the same queries in file order.
    order = np.argsort(keys)
    pos = np.empty(len(keys), np.intp)
    pos[order] = np.searchsorted(sorted_keys, keys[order])
    pos[pos == len(sorted_keys)] = 0
    at = pos
    found = sorted_keys[at] == keys
    result: Indexes = np.where(found, at, -1)
    return result


def _first_seen(first_line: UInt32s, index: Indexes, lines: UInt32s) -> UInt32s:
    uniq, first_pos, inverse = np.unique(index, return_index=True, return_inverse=True)
    prior = first_line[uniq]
    first = np.where(prior != 0, prior, lines[first_pos])
    first_line[uniq] = first
    result: UInt32s = first[inverse]
    return result


# Runs are merged up to this many skus: merging two big runs needs a copy of both (and the
# sort order) at once, which at millions of skus would cost more memory than the runs.
MAX_RUN = 1 << 19


class SeenSkus:
    """Sku hashes met in this file (not stored ones) with their first line, as sorted runs
    merged like a binary counter up to ``MAX_RUN``: few runs, 12 bytes a sku."""

    def __init__(self) -> None:
        self._runs: list[tuple[Int64s, UInt32s]] = []

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self._runs)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self._runs)

    def first_seen(self, keys: Int64s, lines: UInt32s) -> UInt32s:
        """Like ``KnownRows.first_seen``, for sku hashes not stored."""
        uniq, first_pos, inverse = np.unique(keys, return_index=True, return_inverse=True)
        prior = np.zeros(len(uniq), np.uint32)
        for run_keys, run_lines in self._runs:
            at = _lookup(run_keys, uniq)
            hit = at >= 0
            prior[hit] = run_lines[at[hit]]
        first = np.where(prior != 0, prior, lines[first_pos])
        fresh = prior == 0
        if fresh.any():
            self._add(uniq[fresh], first[fresh])
        result: UInt32s = first[inverse]
        return result

    def _add(self, keys: Int64s, lines: UInt32s) -> None:
        self._runs.append((keys, lines))
        while (
            len(self._runs) > 1
            and len(self._runs[-1][0]) >= len(self._runs[-2][0]) // 2
            and len(self._runs[-1][0]) + len(self._runs[-2][0]) <= MAX_RUN
        ):
            (k2, v2), (k1, v1) = self._runs.pop(), self._runs.pop()
            k = np.concatenate((k1, k2))
            v = np.concatenate((v1, v2))
            order = np.argsort(k, kind="stable")
            self._runs.append((k[order], v[order]))
