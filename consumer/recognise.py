"""The rows of a file, in line order, sorted into unchanged, duplicate and to-be-written.

Each valid row arrives as its canonical line (``service.core.product``) with its row hash and,
when its hash is stored, the stored row it is (``consumer.known``). In a run that
recognises rows, a stored row met again is *unchanged* and goes no further; a sku met a
second time, wherever the first went, is rejected as ``DUPLICATE_SKU`` naming the first
line; every other row becomes a COPY line: the canonical line, its row and sku hashes,
then its line number (staging) or the feed and job ids (a first load straight into
``products``). A run that does not recognise rows (``RECOGNISE_ROWS=false``: the staged
path, which compares every row in PostgreSQL) sends every valid row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from xxhash import xxh3_64_intdigest

from consumer.known import Indexes, Int64s, KnownRows, SeenSkus, UInt32s, pack_pairs
from service.core.product import PRODUCT, Registry

ErrorRow = tuple[int, str | None, str, str, str]


class Flushed(NamedTuple):
    payload: bytes  # the COPY lines
    pairs: bytes  # their (row hash, sku hash) pairs, packed, when the set is kept


class Recogniser:
    def __init__(
        self,
        known: KnownRows | None,
        tail: str,
        delimiter: str,
        *,
        keep_set: bool = False,
        attributes: bool = False,
        registry: Registry = PRODUCT,
    ) -> None:
        self.known = known
        # Keep the feed's hash set: report the pairs of the rows written, and remember the
        # stored rows they replace (a changed row's stored twin).
        self.keep_set = keep_set
        self.replaced: list[Indexes] = []
        self.seen = SeenSkus() if known is not None else None
        self._suffix = b",%d,%d" + tail.encode() + b"\n" if tail else b",%d,%d,%d\n"
        # A canonical line ends with its attributes field (quoted) only when the row has
        # attributes; COPY always gets one (an empty field: NULL).
        self._bare = b"," + self._suffix
        self._attributes = attributes
        # A duplicate's rejection shows its required columns, as cleaned.
        self._shown = [registry.names.index(c) for c in registry.required]
        self._direct = bool(tail)
        self._delimiter = delimiter
        self.unchanged = 0
        self.duplicates = 0
        self.staged = 0
        self.fresh = 0  # staged rows of skus not stored live (new, or deleted and back)
        # rows waiting for the next flush, in line order
        self._lines: list[UInt32s] = []
        self._canon: list[bytes] = []
        self._hashes: list[Int64s] = []
        self._index: list[Indexes] = []
        self._slow_lines: list[int] = []
        self._slow_hashes: list[int] = []

    @property
    def pending(self) -> int:
        return len(self._canon)

    def add_block(
        self, first_line: int, canon: list[bytes], hashes: Int64s, index: Indexes
    ) -> None:
        self._close_slow()
        self._lines.append(np.arange(first_line, first_line + len(canon), dtype=np.uint32))
        self._canon.extend(canon)
        self._hashes.append(hashes)
        self._index.append(index)

    def add_row(self, line: int, canon: bytes, row_hash: int) -> None:
        self._slow_lines.append(line)
        self._canon.append(canon)
        self._slow_hashes.append(row_hash)

    def _close_slow(self) -> None:
        if not self._slow_hashes:
            return
        hashes = np.array(self._slow_hashes, np.int64)
        self._lines.append(np.array(self._slow_lines, np.uint32))
        self._slow_hashes = []
        self._slow_lines = []
        self._hashes.append(hashes)
        known = self.known
        self._index.append(
            known.match_rows(hashes) if known is not None else np.full(len(hashes), -1, np.intp)
        )

    def flush(self, errors: list[ErrorRow]) -> Flushed:
        """The COPY text of the pending rows; duplicates go to ``errors``."""
        self._close_slow()
        if not self._canon:
            return Flushed(b"", b"")
        canon = self._canon
        lines: UInt32s = np.concatenate(self._lines)
        hashes: Int64s = np.concatenate(self._hashes)
        index: Indexes = np.concatenate(self._index)
        self._lines, self._canon, self._hashes, self._index = [], [], [], []
        new = np.flatnonzero(index < 0)
        sku_hashes = np.zeros(len(canon), np.int64)
        skus = (canon[i][: canon[i].index(b",")] for i in new.tolist())
        sku_hashes[new] = np.fromiter(map(xxh3_64_intdigest, skus), np.uint64, len(new)).view(
            np.int64
        )  # service.core.product.sku_hash, for a whole block at once
        if self.known is None:
            self.staged += len(canon)
            text = self._copy_text(canon, range(len(canon)), hashes, sku_hashes, lines)
            return Flushed(text, b"")
        stored = index.copy()
        stored[new] = self.known.match_skus(sku_hashes[new])
        first = np.zeros(len(canon), np.uint32)
        mine = stored >= 0
        if mine.any():
            first[mine] = self.known.first_seen(stored[mine], lines[mine])
        others = np.flatnonzero(~mine)
        if len(others):
            assert self.seen is not None
            first[others] = self.seen.first_seen(sku_hashes[others], lines[others])
        duplicate = first != lines
        for i in np.flatnonzero(duplicate).tolist():
            errors.append(self._duplicate(canon[i], int(lines[i]), int(first[i])))
        self.duplicates += int(duplicate.sum())
        unchanged = (index >= 0) & ~duplicate
        self.unchanged += int(unchanged.sum())
        write_mask = ~unchanged & ~duplicate
        self.fresh += int((write_mask & (stored < 0)).sum())
        written = np.flatnonzero(write_mask)
        write = written.tolist()
        self.staged += len(write)
        pairs = b""
        if self.keep_set and len(written):
            pairs = pack_pairs(hashes[written], sku_hashes[written])
            twins = stored[written]
            self.replaced.append(twins[twins >= 0])
        return Flushed(self._copy_text(canon, write, hashes, sku_hashes, lines), pairs)

    def _copy_text(
        self,
        canon: list[bytes],
        rows: list[int] | range,
        hashes: Int64s,
        sku_hashes: Int64s,
        lines: UInt32s,
    ) -> bytes:
        suffix, bare = self._suffix, self._bare
        rh = hashes.tolist()
        sh = sku_hashes.tolist()
        if not self._attributes:
            if self._direct:
                return b"".join(canon[i] + bare % (rh[i], sh[i]) for i in rows)
            ln = lines.tolist()
            return b"".join(canon[i] + bare % (rh[i], sh[i], ln[i]) for i in rows)
        ends = [canon[i][-1:] == b'"' for i in rows]
        if self._direct:
            return b"".join(
                canon[i] + (suffix if e else bare) % (rh[i], sh[i])
                for i, e in zip(rows, ends, strict=True)
            )
        ln = lines.tolist()
        return b"".join(
            canon[i] + (suffix if e else bare) % (rh[i], sh[i], ln[i])
            for i, e in zip(rows, ends, strict=True)
        )

    def _duplicate(self, canon: bytes, line: int, first: int) -> ErrorRow:
        fields = next(csv.reader(io.StringIO(canon.decode(), newline="")))
        buf = io.StringIO()
        csv.writer(buf, delimiter=self._delimiter, lineterminator="").writerow(
            [fields[i] for i in self._shown]
        )
        return (
            line,
            "sku",
            "DUPLICATE_SKU",
            f"sku {fields[0]!r} already appears on line {first}",
            buf.getvalue(),
        )

    def kept(self, *, snapshot: bool) -> Iterator[bytes]:
        """The parts of the stored set that stay (``KnownRows.kept``)."""
        assert self.known is not None
        replaced = np.concatenate(self.replaced) if self.replaced else np.empty(0, np.intp)
        self.replaced = []
        return self.known.kept(replaced, snapshot=snapshot)

    def gone(self) -> list[int]:
        """Row hashes of stored products whose sku the file never held (snapshot deletes)."""
        return self.known.gone().tolist() if self.known is not None else []
