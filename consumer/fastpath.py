"""The fast path: a block whose rows are all already clean skips the CSV parser.

Most feeds are machine-written and clean. For such a block, cleaning every field in Python
would only give back the text it started with, at several microseconds a row. Instead one
regular expression, built from the header, checks in C that every line of the block is
one record whose every field is in *canonical form*: exactly the text the column's cleaner
would return (trimmed, single spaces, `1234.50`, upper-case currency, ...), quoted only
where the quoting means the same to Python's ``csv`` and to PostgreSQL's ``COPY ... CSV``.
The rules a pattern cannot say (currency in ISO 4217, GTIN check digit, a real calendar
date) are checked once per distinct value by the column's own cleaner, so ``service.core.rules``
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
from typing import Any, NamedTuple

import msgspec
import numpy as np
from xxhash import xxh3_64_intdigest

from consumer.known import Indexes, Int64s, KnownRows
from consumer.validate import HeaderInfo
from service.core.product import any_field
from service.core.rules import RowFault

MAX_LINE = 5000  # no field of a line this short can pass a length limit (description: 5000)
_CACHE_LIMIT = 100_000
_json = msgspec.json.Encoder().encode


_ATTRIBUTE_CACHE = 100_000


def _line_builder(header: HeaderInfo, carried: dict[str, Any]) -> Callable[[list[str]], str]:
    """A function from the parsed fields of a line the pattern found clean to its canonical
    line (service.core.product): the same text ``Registry.canonical_line`` gives for the
    cleaned values, built with one expression per column instead of a call per field (a
    wide feed's rows cost a few microseconds, not twenty). The pattern guarantees each
    field is canonical already, bar three things done here: an empty field is the column's
    default, free text holding a comma or a quote is quoted, and an attribute is trimmed
    (and JSON-encoded, each distinct value once)."""
    registry = header.registry
    env: dict[str, Any] = {"Q": _quote}
    parts: list[str] = []
    body: list[str] = []
    for i, c in enumerate(registry.columns):
        if c.name in carried:  # ``15.00 USD``: the amount
            env[f"S{i}"] = c.split
            value = f"S{i}(f[{header.index[c.name]}])[0]"
        elif header.carried(c.name):  # ... and the code
            env[f"S{i}"] = registry.by_name[c.carried_by].split
            value = f"S{i}(f[{header.index[c.carried_by]}])[1]"
        elif c.name in header.index:
            value = f"f[{header.index[c.name]}]"
        else:
            parts.append(repr(c.default))
            continue
        body.append(f"    v{i} = {value}")
        if c.free_text:
            parts.append(f"(v{i} if ',' not in v{i} and '\"' not in v{i} else Q(v{i}))")
        elif c.default:
            parts.append(f"(v{i} or {c.default!r})")
        else:
            parts.append(f"v{i}")
    body.append("    line = ','.join((" + ", ".join(parts) + ",))")
    if header.attributes:
        cache: dict[str, str] = {}

        def encoded(value: str) -> str:
            if len(cache) >= _ATTRIBUTE_CACHE:
                cache.clear()
            text = cache[value] = _json(value).decode().replace('"', '""')
            return text

        env.update(C=cache, E=encoded)
        body.append("    a = []")
        for j, (pos, name) in enumerate(sorted(header.attributes, key=lambda a: a[1])):
            env[f"K{j}"] = _json(name).decode().replace('"', '""') + ":"
            body.append(f"    v = f[{pos}].strip()")
            body.append(f"    if v: a.append(K{j} + (C[v] if v in C else E(v)))")
        body.append("    if a: line += ',\"{' + ','.join(a) + '}\"'")
    source = "def build(f):\n" + "\n".join(body) + "\n    return line\n"
    exec(compile(source, "<canonical line builder>", "exec"), env)
    built: Callable[[list[str]], str] = env["build"]
    return built


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class FastBlock(NamedTuple):
    canon: list[bytes]  # the canonical line of each row
    hashes: Int64s  # their row hashes
    stored: Indexes  # the stored row each is (KnownRows), or -1


class FastPath:
    def __init__(self, header: HeaderInfo, delimiter: str) -> None:
        x = self._sep = re.escape(delimiter)
        registry = header.registry
        by_position = {pos: col for col, pos in header.index.items()}
        self._columns = [by_position.get(pos, "") for pos in range(header.width)]
        # Per field: its pattern for a loose and a strict match, and the cleaner that
        # checks its values (its capture group), in field order.
        self._patterns: list[tuple[str, str]] = []
        self._cleaners: list[Callable[[str], object]] = []
        carried = {c.carried_by: c for c in registry.columns if header.carried(c.name)}

        for name in self._columns:
            column = registry.by_name.get(name)
            if column is None:
                self._patterns.append((any_field(x, False), any_field(x, True)))
            elif name in carried:  # ``15.00 USD``: the carried value is the group
                self._patterns.append((column.carrier_fast, column.carrier_fast))
                self._cleaners.append(carried[name].clean)
            else:
                self._patterns.append((column.fast(x, False), column.fast(x, True)))
                if column.checked:
                    self._cleaners.append(column.clean)
        self._good: list[set[str]] = [set() for _ in self._cleaners]
        self._row = self._pattern(strict=False)
        if self._row.groups != len(self._cleaners):
            raise ValueError("a checked column's fast pattern must have one capture group")
        # The standard header with commas: lines are canonical lines as they are, mostly.
        self.canonical = delimiter == "," and tuple(self._columns) == registry.names
        self._strict = self._pattern(strict=True) if self.canonical else None
        self._delimiter = delimiter
        # The canonical line of a clean line's parsed fields, compiled for this header.
        self._line = _line_builder(header, carried)

    def _pattern(self, strict: bool) -> re.Pattern[str]:
        chosen = (p[1] if strict else p[0] for p in self._patterns)
        return re.compile("^" + self._sep.join(chosen) + "\n", re.MULTILINE)

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
        line = self._line
        rows = csv.reader(text.split("\n")[:-1], delimiter=self._delimiter)
        return [line(fields).encode() for fields in rows]

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
