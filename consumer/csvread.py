"""Reads CSV records from a stream of bytes with their physical line numbers and faults.

``LineSource`` cuts the byte stream into blocks that end on a line break (BOM dropped,
absurdly long lines cut). ``RecordReader`` parses blocks pushed into it with the ``csv``
module, fed one decoded physical line at a time, so each record knows the line it starts on
and the raw text it came from. A record that spans blocks pulls the next block from the
source itself. Between records, when every pushed line is consumed, the reader is ``idle``:
the parse worker may then hand the next block to the fast path (``consumer.fastpath``)
instead. Faults that belong to one record (bad UTF-8, a NUL byte, a field over the limit,
an unterminated quote) reject that record only. Memory holds one block and one record,
whatever the file's size.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple

FIELD_LIMIT = 64 * 1024
LINE_LIMIT = 16 * 1024 * 1024  # a "line" longer than this is cut (and its record rejected)
RAW_LIMIT = 1024
BOM = b"\xef\xbb\xbf"
_CUT_MARK = "\x00\n"  # ends the kept head of a cut line (a NUL never survives decoding)

csv.field_size_limit(FIELD_LIMIT)


class Record(NamedTuple):
    line: int  # physical line the record starts on (header = 1)
    fields: list[str] | None  # None when ``fault`` is set
    fault: str | None  # INVALID_ENCODING, INVALID_CHARACTER, FIELD_TOO_LARGE, UNTERMINATED_QUOTE
    raw: str  # the record's text, cut to RAW_LIMIT (faulty records only; see raw_of_last)


class _FaultyLine(str):
    """A decoded line that carries the fault found while decoding it."""

    fault: str


class LineSource:
    """Byte blocks of the input that end on a line break (or at the end of input)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._blocks = self._cut()
        self._returned: list[bytes] = []  # blocks given back, the next one last
        self.taken = 0  # bytes of the blocks taken so far (less those given back)

    def next_block(self) -> bytes | None:
        block = self._returned.pop() if self._returned else next(self._blocks, None)
        if block is not None:
            self.taken += len(block)
        return block

    def give_back(self, *blocks: bytes) -> None:
        """Make ``blocks`` (whole lines, in input order) the next ones again."""
        self._returned.extend(reversed(blocks))
        self.taken -= sum(len(b) for b in blocks)

    def _cut(self) -> Iterator[bytes]:
        carry = b""
        head = True  # still looking for a BOM (it may come split over the first chunks)
        for chunk in self._chunks:
            if carry:
                chunk = carry + chunk
                carry = b""
            if head:
                if len(chunk) < len(BOM) and BOM.startswith(chunk):
                    carry = chunk
                    continue
                head = False
                if chunk.startswith(BOM):
                    chunk = chunk[len(BOM) :]
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                carry = chunk
                if len(carry) > LINE_LIMIT:
                    # A line this long is no product row: keep its head, drop to its end.
                    yield carry[:RAW_LIMIT] + _CUT_MARK.encode()
                    carry = self._skip_to_newline()
                continue
            carry = chunk[cut:]
            yield chunk[:cut]
        if carry:
            yield carry

    def _skip_to_newline(self) -> bytes:
        for chunk in self._chunks:
            pos = chunk.find(b"\n")
            if pos >= 0:
                return chunk[pos + 1 :]
        return b""


def split_lines(text: str) -> list[str]:
    """Physical lines with their ``\\n`` kept (``\\r`` stays: the csv module reads CRLF).

    Only ``\\n`` ends a line: ``str.splitlines`` would also cut at characters such as
    U+2028 or \\x1c, which are ordinary characters inside a CSV field.
    """
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


class RecordReader:
    def __init__(self, source: LineSource | Iterable[bytes], delimiter: str = ",") -> None:
        self._source = source if isinstance(source, LineSource) else LineSource(source)
        self.lineno = 0  # the last physical line handed to the csv module (or the fast path)
        self._pending: deque[str] = deque()
        self._cur: list[str] = []  # the lines of the record being read
        self._fault: str | None = None
        self._eof = False
        self._lines = self._line_iter()
        self._reader = csv.reader(self._lines, delimiter=delimiter, strict=False)

    # -- input ------------------------------------------------------------------------

    def push(self, block: bytes) -> None:
        """Queue a block's lines for the csv module."""
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            self._pending.extend(self._checked_lines(block))
            return
        if "\0" in text:
            self._pending.extend(self._checked_lines(block))
            return
        self._pending.extend(split_lines(text))

    def at_end(self) -> bool:
        return self._eof

    def unread(self) -> int:
        """About how many bytes of the pushed blocks are still queued (characters: exact for
        ASCII): what a progress estimate takes off the blocks taken. Called once a batch."""
        return sum(len(line) for line in self._pending)

    def give_back(self) -> None:
        """Between records: hand the lines queued but not read back to the source, so that
        the fast path may take them (the header's block would otherwise go through the
        csv module whole). Lines with faults the source cannot carry stay queued."""
        pending = self._pending
        if pending and all(type(line) is str for line in pending):
            self._source.give_back("".join(pending).encode("utf-8"))
            pending.clear()

    def _checked_lines(self, block: bytes) -> Iterator[str]:
        """Line by line, for blocks with bad UTF-8 or NUL bytes: only those lines are faulty."""
        parts = block.split(b"\n")
        last = parts.pop()
        for part in [p + b"\n" for p in parts] + ([last] if last else []):
            fault = None
            try:
                line = part.decode("utf-8")
            except UnicodeDecodeError:
                line = part.decode("utf-8", "replace")
                fault = "INVALID_ENCODING"
            if "\0" in line:
                if line.endswith(_CUT_MARK) and len(line) <= RAW_LIMIT + len(_CUT_MARK):
                    fault = fault or "FIELD_TOO_LARGE"  # cut by LineSource
                else:
                    fault = fault or "INVALID_CHARACTER"
                line = line.replace("\0", "")
            if fault is None:
                yield line
            else:
                faulty = _FaultyLine(line)
                faulty.fault = fault
                yield faulty

    def _line_iter(self) -> Iterator[str]:
        pending = self._pending
        cur = self._cur
        while True:
            if not pending:
                # Only reached in the middle of a record (next_record() returns when idle):
                # the record goes on in the next block.
                if not self._pull():
                    return
                continue
            line = pending.popleft()
            self.lineno += 1
            if type(line) is _FaultyLine:
                self._fault = self._fault or line.fault
            cur.append(line)
            yield line

    # -- output -----------------------------------------------------------------------

    def _quotes(self) -> int:
        return sum(line.count('"') for line in self._cur)

    def _raw(self) -> str:
        return "".join(self._cur[:8])[:RAW_LIMIT].rstrip("\r\n")

    def next_record(self) -> Record | None:
        """The next record of the pushed lines, or None when idle (or at the end)."""
        while True:
            if not self._pending and not self._eof:
                return None
            cur = self._cur
            cur.clear()
            self._fault = None
            start = self.lineno + 1
            try:
                fields = next(self._reader)
            except StopIteration:
                return None
            except csv.Error:
                return self._oversize(start)
            if self._eof and self._quotes() % 2:
                # The input ended inside a quoted field: it swallowed the rest of the file.
                return Record(start, None, "UNTERMINATED_QUOTE", self._raw())
            if self._fault:
                return Record(start, None, self._fault, self._raw())
            if not fields:
                continue  # blank line
            return Record(start, fields, None, "")

    def __iter__(self) -> Iterator[Record]:
        """Every record of the whole source (the slow path only: for tests and tools)."""
        while True:
            rec = self.next_record()
            if rec is None:
                if self._eof or not self._pull():
                    return
                continue
            yield rec

    def _pull(self) -> bool:
        """Push the source's next block; False (and at end) when there is none."""
        block = self._source.next_block()
        if block is None:
            self._eof = True
            return False
        self.push(block)
        return True

    def raw_of_last(self) -> str:
        """The raw text of the record last returned (for rejections found after parsing)."""
        return self._raw()

    def _oversize(self, start: int) -> Record:
        """A field passed the limit: skip to the end of its record, by quote parity."""
        parity = self._quotes() % 2
        head = self._raw()
        while parity:
            self._cur.clear()  # keep memory flat while skipping
            try:
                next(self._lines)
            except StopIteration:
                return Record(start, None, "UNTERMINATED_QUOTE", head)
            parity = (parity + self._cur[-1].count('"')) % 2 if self._cur else parity
        return Record(start, None, "FIELD_TOO_LARGE", head)
