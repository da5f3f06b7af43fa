"""Turns parsed records into clean rows (values in ``service.core.product`` order) or rejections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer import rules
from consumer.rules import COLUMNS, RowFault
from service.core.product import REQUIRED

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
        """Too many columns for the fast path's one pattern: the slow path reads them."""
        return self.width > MAX_STAGED_COLUMNS


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
