"""Reads CSV records from a stream of bytes with their physical line numbers and faults.

RFC 4180 quoting is parsed by the ``csv`` module, fed one decoded physical line at a time, so
each record knows the line it starts on and the raw text it came from. Faults that belong
to one record (bad UTF-8, a NUL byte, a field over the limit, an unterminated quote) reject
that record only. Memory holds one chunk and one record, whatever the file's size.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import NamedTuple

FIELD_LIMIT = 64 * 1024
LINE_LIMIT = 16 * 1024 * 1024  # a "line" longer than this is cut (and its record rejected)
RAW_LIMIT = 1024

csv.field_size_limit(FIELD_LIMIT)


class Record(NamedTuple):
    line: int  # physical line the record starts on (header = 1)
    fields: list[str] | None  # None when ``fault`` is set
    fault: str | None  # INVALID_ENCODING, INVALID_CHARACTER, FIELD_TOO_LARGE, UNTERMINATED_QUOTE
    raw: str  # the record's text, cut to RAW_LIMIT


class RecordReader:
    def __init__(self, chunks: Iterable[bytes], delimiter: str = ",") -> None:
        self._chunks = iter(chunks)
        self.lineno = 0
        self._cur: list[str] = []
        self._cur_len = 0
        self._fault: str | None = None
        self._eof = False
        self._first = True
        self._lines = self._line_iter()
        self._reader = csv.reader(self._lines, delimiter=delimiter, strict=False)

    def _line_iter(self) -> Iterator[str]:
        carry = b""
        for chunk in self._chunks:
            if carry:
                chunk = carry + chunk
            parts = chunk.split(b"\n")
            carry = parts.pop()
            if len(carry) > LINE_LIMIT:
                # A line this long is no product row: keep its head, drop the rest.
                yield self._decode(carry[:RAW_LIMIT] + b"\n", oversize=True)
                carry = b""
                for more in self._skip_to_newline():
                    carry = more
                    break
                continue
            for part in parts:
                yield self._decode(part + b"\n")
        if carry:
            parts = carry.split(b"\n")
            last = parts.pop()
            for part in parts:
                yield self._decode(part + b"\n")
            if last:
                yield self._decode(last)
        self._eof = True

    def _skip_to_newline(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            pos = chunk.find(b"\n")
            if pos >= 0:
                yield chunk[pos + 1 :]
                return

    def _decode(self, data: bytes, oversize: bool = False) -> str:
        self.lineno += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", "replace")
            self._fault = self._fault or "INVALID_ENCODING"
        if self._first:
            self._first = False
            if text.startswith("\ufeff"):
                text = text[1:]
        if "\0" in text:
            text = text.replace("\0", "")
            self._fault = self._fault or "INVALID_CHARACTER"
        if oversize:
            self._fault = self._fault or "FIELD_TOO_LARGE"
        if self._cur_len < RAW_LIMIT:
            self._cur.append(text)
            self._cur_len += len(text)
        self._quotes += text.count('"')
        return text

    _quotes = 0

    def _raw(self) -> str:
        return "".join(self._cur)[:RAW_LIMIT].rstrip("\r\n")

    def __iter__(self) -> Iterator[Record]:
        reader = self._reader
        while True:
            self._cur = []
            self._cur_len = 0
            self._fault = None
            self._quotes = 0
            start = self.lineno + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield self._oversize(start)
                continue
            if self._eof and self._quotes % 2:
                # The input ended inside a quoted field: it swallowed the rest of the file.
                yield Record(start, None, "UNTERMINATED_QUOTE", self._raw())
                return
            if not fields:
                if self._fault:
                    yield Record(start, None, self._fault, self._raw())
                continue  # blank line
            if self._fault:
                yield Record(start, None, self._fault, self._raw())
                continue
            yield Record(start, fields, None, self._raw())

    def _oversize(self, start: int) -> Record:
        """A field passed the limit: skip to the end of its record, by quote parity."""
        while self._quotes % 2:
            try:
                next(self._lines)
            except StopIteration:
                return Record(start, None, "UNTERMINATED_QUOTE", self._raw())
        return Record(start, None, "FIELD_TOO_LARGE", self._raw())
