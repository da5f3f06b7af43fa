"""The fast path: a block whose rows are all already clean skips the CSV parser.

Most feeds are machine-written and clean. For such a block, cleaning every field in Python
would only give back the text it started with, at several microseconds a row. Instead one
regular expression, built from the header, checks in C that every line of the block is
one record whose every field is in *canonical form*: exactly the text the column's cleaner
would return (trimmed, single spaces, `1234.50`, upper-case currency, ...), quoted only
where the quoting means the same to Python's ``csv`` and to PostgreSQL's ``COPY ... CSV``.
The rules a pattern cannot say (currency in ISO 4217, GTIN check digit, a real calendar
date) are checked once per distinct value by the column's own cleaner, so ``consumer.rules``
stays the one definition of a valid value. A block with a single doubtful line is refused
whole; the worker then halves it and tries each half again, down to a few dozen lines that
go through the slow path (``csvread`` + ``validate``), which finds and explains each fault.

Both paths give each row its *canonical line* (service.core.product), so they hash alike (a
property test holds them together). With the standard header and commas, a clean line
usually *is* its canonical line: it is hashed as read, and a line whose hash is stored
(``consumer.known``) is not even matched against the pattern, since it is byte for byte a
row that was valid when it was loaded.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from operator import itemgetter
from typing import NamedTuple

import numpy as np
from xxhash import xxh3_64_intdigest

from consumer import rules
from consumer.known import Indexes, Int64s, KnownRows
from consumer.rules import RowFault
from consumer.validate import HeaderInfo
from service.core.product import NAMES, canonical_line

MAX_LINE = 5000  # no field of a line this short can pass a length limit (description: 5000)
_CACHE_LIMIT = 100_000


def _column_patterns(x: str, strict: bool) -> dict[str, str]:
    """Canonical-form patterns per column; ``x`` is the delimiter escaped for a class.

    ``strict``: the line must also be the row's *canonical line* (service.core.product): free
    text quoted only when it must be, quantity and active written out."""

    def trimmed(limit: int | None) -> str:
        # Unquoted, no quote, no surrounding white space; a length cap as a lookahead.
        cap = f"(?=[^{x}\\n]{{1,{limit}}}(?:[{x}]|\\n))" if limit else ""
        return f'{cap}(?!\\s)[^{x}"\\n\\r]++(?<!\\s)'

    quoted = '"(?!\\s)(?!"(?:[' + x + ']|\\n))(?:[^"\\n\\r]++|"")*+(?<!\\s)"'
    if strict:  # quoted only when it holds the delimiter or a quote
        quoted = '"(?=[^"\\n\\r' + x + "]*+(?:[" + x + ']|""))' + quoted[1:]
    return {
        "sku": "[A-Za-z0-9._/-]{1,64}",
        "name": f'(?=[^{x}\\n]{{1,300}}(?:[{x}]|\\n))[^\\s{x}"]++(?: [^\\s{x}"]++)*+',
        # description: 5000 characters at most, guaranteed by MAX_LINE
        "description": f"(?:{trimmed(None)}|{quoted})?",
        "price": "(?:0|[1-9][0-9]{0,9})\\.[0-9]{2}",
        "currency": "([A-Z]{3})",
        "quantity": "(?:0|[1-9][0-9]{0,8})" + ("" if strict else "?"),  # below 2^31 - 1
        "category": f"(?:{trimmed(200)})?",
        "brand": f"(?:{trimmed(200)})?",
        "gtin": "((?:[0-9]{8}|[0-9]{12,14})?)",
        "updated_at": (
            "((?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]{6})?Z)?)"
        ),
        "active": "(?:true|false)" + ("" if strict else "?"),
        "": f'(?:[^{x}"\\n\\r]*+|"(?:[^"\\n\\r]++|"")*+")',  # an ignored column: any field
    }


# Columns whose values are also checked one distinct value at a time by their cleaner.
_CHECKED: dict[str, Callable[[str], object]] = {
    "currency": rules.clean_currency,
    "gtin": rules.clean_gtin,
    "updated_at": rules.clean_updated_at,
}


class FastBlock(NamedTuple):
    canon: list[bytes]  # the canonical line of each row
    hashes: Int64s  # their row hashes
    stored: Indexes  # the stored row each is (KnownRows), or -1


class FastPath:
    def __init__(self, header: HeaderInfo, delimiter: str) -> None:
        x = re.escape(delimiter)
        by_position = {pos: col for col, pos in header.index.items()}
        self._columns = [by_position.get(pos, "") for pos in range(header.width)]
        self._cleaners = [_CHECKED[c] for c in self._columns if c in _CHECKED]
        self._good: list[set[str]] = [set() for _ in self._cleaners]
        self._row = self._pattern(x, strict=False)
        # The standard header with commas: lines are canonical lines as they are, mostly.
        self.canonical = delimiter == "," and tuple(self._columns) == NAMES
        self._strict = self._pattern(x, strict=True) if self.canonical else None
        self._delimiter = delimiter
        self._take = [header.index.get(c, -1) for c in NAMES]

    def _pattern(self, x: str, strict: bool) -> re.Pattern[str]:
        patterns = _column_patterns(x, strict)
        return re.compile("^" + x.join(patterns[c] for c in self._columns) + "\n", re.MULTILINE)

    def take(self, block: bytes, known: KnownRows | None) -> FastBlock | None:
        """The block's rows if every line is one clean record, else None (the slow path
        then finds and explains each fault). With the standard header, a line whose hash
        is stored is a stored row's canonical line: known valid, so not even parsed."""
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
            if b"\r" in block:
                return None
        if not block.endswith(b"\n"):
            block += b"\n"
        lines = block.split(b"\n")
        lines.pop()
        if self.canonical:
            hashes = np.fromiter(map(xxh3_64_intdigest, lines), np.uint64, len(lines))
            canon_hashes: Int64s = hashes.view(np.int64)
            index = known.match_rows(canon_hashes) if known else np.full(len(lines), -1, np.intp)
            todo = np.flatnonzero(index < 0)
            if not len(todo):
                return FastBlock(lines, canon_hashes, index)
            doubt = lines if len(todo) == len(lines) else [lines[i] for i in todo]
            text = self._text(doubt)
            if text is None:
                return None
            assert self._strict is not None
            if self._valid(self._strict, text, len(doubt)):
                return FastBlock(lines, canon_hashes, index)
        else:
            todo = np.arange(len(lines))
            canon_hashes = np.zeros(len(lines), np.int64)
            index = np.full(len(lines), -1, np.intp)
            doubt = lines
            text = self._text(doubt)
            if text is None:
                return None
        # Clean but not canonical (another header, delimiter, needless quotes, an empty
        # quantity): the canonical line of each row, from its parsed fields.
        if not self._valid(self._row, text, len(doubt)):
            return None
        canon = list(lines)
        redo = self._canonical(text)
        for i, line in zip(todo.tolist(), redo, strict=True):
            canon[i] = line
        redone = np.fromiter(map(xxh3_64_intdigest, redo), np.uint64, len(redo)).view(np.int64)
        canon_hashes[todo] = redone
        if known is not None:
            index[todo] = known.match_rows(redone)
        return FastBlock(canon, canon_hashes, index)

    @staticmethod
    def _text(lines: list[bytes]) -> str | None:
        try:
            text = b"\n".join(lines).decode("utf-8") + "\n"
        except UnicodeDecodeError:
            return None
        if "\0" in text or max(map(len, lines)) > MAX_LINE:
            return None
        return text

    def _valid(self, pattern: re.Pattern[str], text: str, count: int) -> bool:
        found = pattern.findall(text)
        if len(found) != count:
            return False  # some line is not a clean record (or not one record)
        return not self._cleaners or self._values_ok(found)

    def _canonical(self, text: str) -> list[bytes]:
        take = self._take
        out = []
        for fields in csv.reader(text.split("\n")[:-1], delimiter=self._delimiter):
            out.append(canonical_line([fields[i] if i >= 0 else "" for i in take]).encode())
        return out

    def _values_ok(self, found: list[tuple[str, ...]] | list[str]) -> bool:
        columns: list[set[str]]
        if len(self._cleaners) == 1:
            columns = [set(found)]  # type: ignore[arg-type]  # one group: findall gives str
        else:  # one set per column, straight from the tuples (no transposed copy)
            columns = [set(map(itemgetter(i), found)) for i in range(len(self._cleaners))]
        for values, clean, good in zip(columns, self._cleaners, self._good, strict=True):
            values -= good
            for value in values:
                if value:
                    try:
                        if clean(value) != value:
                            return False
                    except RowFault:
                        return False
                if len(good) >= _CACHE_LIMIT:
                    good.clear()
                good.add(value)
        return True
