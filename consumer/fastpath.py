"""The fast path: a block whose rows are all already clean goes to COPY as it is.

Most feeds are machine-written and clean. For such a block, cleaning every field in Python
would only give back the text it started with, at several microseconds a row. Instead one
regular expression, built from the header, checks in C that every line of the block is
one record whose every field is in *canonical form*: exactly the text the column's cleaner
would return (trimmed, single spaces, `1234.50`, upper-case currency, ...), quoted only
where the quoting means the same to Python's ``csv`` and to PostgreSQL's ``COPY ... CSV``.
The rules a pattern cannot say (currency in ISO 4217, GTIN check digit, a real calendar
date) are checked once per distinct value by the column's own cleaner, so ``consumer.rules``
stays the one definition of a valid value. A block that passes is prefixed with line numbers
and sent on; a block with a single doubtful line goes, whole, through the slow path
(``csvread`` + ``validate``), which finds and explains each fault. Both paths stage the same
text for the same row, so they hash the same (a property test holds them together).

An empty ``quantity`` or ``active`` is staged as NULL and defaulted in SQL (0 and true),
which is what the slow path's cleaners write too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from consumer import rules
from consumer.rules import RowFault
from consumer.validate import HeaderInfo

MAX_LINE = 5000  # no field of a line this short can pass a length limit (description: 5000)
_CACHE_LIMIT = 100_000


def _column_patterns(x: str) -> dict[str, str]:
    """Canonical-form patterns per column; ``x`` is the delimiter escaped for a class."""

    def trimmed(limit: int | None) -> str:
        # Unquoted, no quote, no surrounding white space; a length cap as a lookahead.
        cap = f"(?=[^{x}\\n]{{1,{limit}}}(?:[{x}]|\\n))" if limit else ""
        return f'{cap}(?!\\s)[^{x}"\\n\\r]++(?<!\\s)'

    quoted = '"(?!\\s)(?!"(?:[' + x + ']|\\n))(?:[^"\\n\\r]++|"")*+(?<!\\s)"'
    return {
        "sku": "[A-Za-z0-9._/-]{1,64}",
        "name": f'(?=[^{x}\\n]{{1,300}}(?:[{x}]|\\n))[^\\s{x}"]++(?: [^\\s{x}"]++)*+',
        # description: 5000 characters at most, guaranteed by MAX_LINE
        "description": f"(?:{trimmed(None)}|{quoted})?",
        "price": "(?:0|[1-9][0-9]{0,9})\\.[0-9]{2}",
        "currency": "([A-Z]{3})",
        "quantity": "(?:0|[1-9][0-9]{0,8})?",  # below 2^31 - 1 by its length
        "category": f"(?:{trimmed(200)})?",
        "brand": f"(?:{trimmed(200)})?",
        "gtin": "((?:[0-9]{8}|[0-9]{12,14})?)",
        "updated_at": (
            "((?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]{6})?Z)?)"
        ),
        "active": "(?:true|false)?",
        "": f'(?:[^{x}"\\n\\r]*+|"(?:[^"\\n\\r]++|"")*+")',  # an ignored column: any field
    }


# Columns whose values are also checked one distinct value at a time by their cleaner.
_CHECKED: dict[str, Callable[[str], object]] = {
    "currency": rules.clean_currency,
    "gtin": rules.clean_gtin,
    "updated_at": rules.clean_updated_at,
}


class FastPath:
    def __init__(self, header: HeaderInfo, delimiter: str) -> None:
        x = re.escape(delimiter)
        patterns = _column_patterns(x)
        by_position = {pos: col for col, pos in header.index.items()}
        parts: list[str] = []
        self._checked: list[tuple[int, Callable[[str], object], set[str]]] = []
        for pos in range(header.width):
            column = by_position.get(pos, "")
            parts.append(patterns[column])
            if column in _CHECKED:
                self._checked.append((len(self._checked), _CHECKED[column], set()))
        self._row = re.compile("^" + x.join(parts) + "\n", re.MULTILINE)
        self._prefix = "{}" + delimiter + "{}\n"  # the delimiters allowed hold no brace

    def try_block(self, block: bytes, first_line: int) -> tuple[str, int] | None:
        """COPY text for the block (line number first) and its row count, or None."""
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\0" in text:
            return None
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if "\r" in text:
                return None
        if not text.endswith("\n"):
            text += "\n"
        lines = text.split("\n")
        lines.pop()
        if max(map(len, lines)) > MAX_LINE:
            return None
        found = self._row.findall(text)
        if len(found) != len(lines):
            return None  # some line is not a clean record (or not one record)
        if self._checked and not self._values_ok(found):
            return None
        prefix = self._prefix.format
        return "".join(map(prefix, range(first_line, first_line + len(lines)), lines)), len(lines)

    def _values_ok(self, found: list[tuple[str, ...]] | list[str]) -> bool:
        columns: list[tuple[str, ...]]
        if len(self._checked) == 1:
            columns = [tuple(found)]  # type: ignore[arg-type]
        else:
            columns = list(zip(*found, strict=True))
        for index, clean, good in self._checked:
            for value in set(columns[index]) - good:
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
