"""Turns parsed records into clean rows (CSV for COPY, with their hash) or rejections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer import rules
from consumer.rules import COLUMNS, REQUIRED, RowFault

_CACHE_LIMIT = 50_000
MAX_STAGED_COLUMNS = 1000

# The cleaned values of one row, in COLUMNS order.
CleanRow = tuple[
    str, str, str | None, str, str, int, str | None, str | None, str | None, str | None, str
]


class HeaderInfo:
    def __init__(self, header: list[str]) -> None:
        self.width = len(header)
        self.index: dict[str, int] = {}
        self.ignored: list[str] = []
        for i, name in enumerate(header):
            key = name.strip().lower()
            if key in COLUMNS and key not in self.index:
                self.index[key] = i
            else:
                self.ignored.append(name.strip())
        self.missing = [c for c in REQUIRED if c not in self.index]

    @property
    def wide(self) -> bool:
        """Too many columns to stage each one (PostgreSQL allows 1600 in a table): only the
        known columns are staged then, and the fast path (which stages lines whole) is off."""
        return self.width > MAX_STAGED_COLUMNS

    @property
    def stage_columns(self) -> list[str]:
        """The staging table's column for each header position (``x<n>`` when ignored), or,
        for a wide header, for each known column in header order."""
        by_position = {pos: col for col, pos in self.index.items()}
        if self.wide:
            return [by_position[pos] for pos in sorted(by_position)]
        return [by_position.get(pos, f"x{pos}") for pos in range(self.width)]


def _cached(clean: Callable[[str], Any]) -> Callable[[str], Any]:
    """Memoise a cleaner for columns whose raw values repeat (currency, brand, ...)."""
    cache: dict[str, Any] = {}

    def lookup(value: str) -> Any:
        try:
            return cache[value]
        except KeyError:
            pass
        result = clean(value)  # raises RowFault: faults are never cached
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = result
        return result

    return lookup


def _absent(default: Any) -> Callable[[str], Any]:
    return lambda _value: default


class RowValidator:
    """Cleans one row in column order; the first fault raises RowFault."""

    def __init__(self, header: HeaderInfo) -> None:
        self.width = header.width
        idx = header.index
        self._pos = tuple(idx.get(c, 0) for c in COLUMNS)

        def pick(column: str, clean: Callable[[str], Any], cache: bool, default: Any) -> Any:
            if column not in idx:
                return _absent(default)
            return _cached(clean) if cache else clean

        self._description = pick("description", rules.clean_description, False, None)
        self._quantity = pick("quantity", rules.clean_quantity, False, 0)
        self._currency = _cached(rules.clean_currency)
        self._category = pick("category", rules.clean_category, True, None)
        self._brand = pick("brand", rules.clean_brand, True, None)
        self._gtin = pick("gtin", rules.clean_gtin, True, None)
        self._updated_at = pick("updated_at", rules.clean_updated_at, True, None)
        self._active = pick("active", rules.clean_active, True, "true")

    def clean(self, f: list[str]) -> CleanRow:
        if len(f) != self.width:
            raise RowFault(
                "ROW_LENGTH", None, f"row has {len(f)} fields; the header has {self.width}"
            )
        p = self._pos
        return (
            rules.clean_sku(f[p[0]]),
            rules.clean_name(f[p[1]]),
            self._description(f[p[2]]),
            rules.clean_price(f[p[3]]),
            self._currency(f[p[4]]),
            self._quantity(f[p[5]]),
            self._category(f[p[6]]),
            self._brand(f[p[7]]),
            self._gtin(f[p[8]]),
            self._updated_at(f[p[9]]),
            self._active(f[p[10]]),
        )


def hash_text(v: CleanRow) -> str:
    """The text the row hash is a digest of: the cleaned values joined by U+001F, as the
    database's product_hash() joins the staged text (sql/0002_row_hash_bigint.sql)."""
    return "\x1f".join(
        (
            v[0],
            v[1],
            v[2] or "",
            v[3],
            v[4],
            str(v[5]),
            v[6] or "",
            v[7] or "",
            v[8] or "",
            v[9] or "",
            v[10],
        )
    )


def _q(value: object) -> str:
    """A free-text field for COPY ... CSV: always quoted; None stays unquoted empty (NULL)."""
    if value is None:
        return ""
    return '"' + str(value).replace('"', '""') + '"'


def _plain(value: object) -> str:
    """A field that can hold no delimiter, quote or line break (sku, price, code, ...)."""
    return "" if value is None else str(value)


# How each column of a CleanRow is written for COPY (free text is quoted).
_WRITERS = (_plain, _q, _q, _plain, _plain, _plain, _q, _q, _plain, _plain, _plain)


class CopyWriter:
    """One staging row as COPY CSV: the line number, then the cleaned values in the header's
    column order (NULL for ignored columns), so that the fast path can send clean lines as
    they are and both paths stage the same text (see consumer/fastpath.py)."""

    def __init__(self, header: HeaderInfo, delimiter: str) -> None:
        by_position = {pos: COLUMNS.index(col) for col, pos in header.index.items()}
        self._order = [by_position.get(pos) for pos in range(header.width)]
        if header.wide:  # only the known columns are staged
            self._order = [j for j in self._order if j is not None]
        self._delimiter = delimiter

    def line(self, line: int, v: CleanRow) -> str:
        out = [str(line)]
        for j in self._order:
            out.append("" if j is None else _WRITERS[j](v[j]))
        return self._delimiter.join(out) + "\n"
