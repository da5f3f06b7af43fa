"""The header's meaning (which field is which product column, which are kept as
attributes) and the slow path's validation of one record, both from the column registry
(``service.core.product``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from service.core import rules
from service.core.product import PRODUCT, Registry, normal_header
from service.core.rules import RowFault

_CACHE_LIMIT = 50_000
MAX_STAGED_COLUMNS = 1000


class HeaderInfo:
    """Each header field resolved to a product column, an attribute, or nothing.

    A field is the column its feed's ``columns`` mapping names (``{"their header": "our
    column"}``, matched like the names below), else the column of its name, else of an
    alias (``Column.aliases``; matched trimmed, case-insensitive, spaces and dashes as
    underscores). Two fields resolved to one column at the same precedence (two mapped to
    it, two of its name, or two of one alias) are ``ambiguous``; otherwise the stronger
    wins (mapping, then name, then the earlier alias) and the other is an attribute.
    Fields that map to nothing are the row's attributes under their header name, as the
    feed's ``unknown`` policy says: ``keep``, ``ignore`` (listed in ``ignored``) or
    ``reject`` (listed in ``unknown``: the run fails). A field with an empty name is
    ignored."""

    def __init__(
        self,
        header: list[str],
        mapping: Mapping[str, str] | None = None,
        unknown: str = "keep",
        registry: Registry = PRODUCT,
    ) -> None:
        self.registry = registry
        self.width = len(header)
        mapped = {normal_header(k): v for k, v in (mapping or {}).items()}
        claims: dict[str, list[tuple[int, int]]] = {}  # column -> [(rank, position)]
        rest: list[int] = []
        for i, raw in enumerate(header):
            key = normal_header(raw)
            if key in mapped:
                claims.setdefault(mapped[key], []).append((0, i))
            elif key in registry.by_name:
                claims.setdefault(key, []).append((1, i))
            elif key in registry.aliases:
                column, rank = registry.aliases[key]
                claims.setdefault(column, []).append((1 + rank, i))
            else:
                rest.append(i)
        self.index: dict[str, int] = {}
        self.ambiguous: dict[str, list[str]] = {}
        for column, found in claims.items():
            found.sort()
            best = [i for rank, i in found if rank == found[0][0]]
            if len(best) > 1:
                self.ambiguous[column] = [header[i].strip() for i in best]
            self.index[column] = best[0]
            rest.extend(i for rank, i in found if rank != found[0][0])
        self.ignored: list[str] = []
        self.unknown: list[str] = []
        self.attributes: list[tuple[int, str]] = []  # (position, name)
        names: dict[str, list[str]] = {}
        for i in sorted(rest):
            name = header[i].strip()
            if not name or unknown == "ignore":
                self.ignored.append(name)
                continue
            if unknown == "reject":
                self.unknown.append(name)
            self.attributes.append((i, name))
            names.setdefault(name, []).append(name)
        for name, same in names.items():
            if len(same) > 1:  # two fields of one attribute name
                self.ambiguous[name] = same
        self.missing = [
            c
            for c in registry.required
            if c not in self.index
            and not (
                registry.by_name[c].carried_by and registry.by_name[c].carried_by in self.index
            )
        ]
        self.mapped = {header[i].strip(): c for c, i in self.index.items()}

    @property
    def wide(self) -> bool:
        """Too many columns for the fast path's one pattern: the slow path reads them."""
        return self.width > MAX_STAGED_COLUMNS

    def carried(self, column: str) -> bool:
        """The column's value comes out of its carrier's field (no column of its own)."""
        c = self.registry.by_name[column]
        return column not in self.index and bool(c.carried_by) and c.carried_by in self.index

    def fault(self) -> tuple[str, str, dict[str, Any]] | None:
        """What makes the header unloadable, as a job error (code, message, details)."""
        if self.missing:
            return (
                "MISSING_COLUMNS",
                f"The header lacks required column(s): {', '.join(self.missing)}",
                {"missing": self.missing, "ignored_columns": self.ignored},
            )
        if self.ambiguous:
            text = "; ".join(f"{', '.join(v)} → {k}" for k, v in self.ambiguous.items())
            return (
                "AMBIGUOUS_COLUMNS",
                f"Several header fields map to one column: {text}; map one of them with the"
                " feed's `columns` option",
                {"ambiguous": self.ambiguous},
            )
        if self.unknown:
            return (
                "UNKNOWN_COLUMNS",
                f"The header has columns that map to no product column: "
                f"{', '.join(self.unknown)} (the feed's unknown_columns is reject)",
                {"unknown": self.unknown},
            )
        if len(self.attributes) > rules.MAX_ATTRIBUTES:
            return (
                "TOO_MANY_ATTRIBUTES",
                f"The header has {len(self.attributes)} attribute columns; at most"
                f" {rules.MAX_ATTRIBUTES}",
                {"attributes": len(self.attributes), "limit": rules.MAX_ATTRIBUTES},
            )
        long = [n for _, n in self.attributes if len(n) > rules.MAX_ATTRIBUTE_NAME]
        if long:
            return (
                "INVALID_ATTRIBUTE_NAME",
                f"An attribute column's name is longer than {rules.MAX_ATTRIBUTE_NAME} characters",
                {"names": [n[:120] for n in long[:10]]},
            )
        return None


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


Step = Callable[[list[str]], Any]


def _step(clean: Callable[[str], Any], pos: int) -> Step:
    return lambda f: clean(f[pos])


def _constant(value: Any) -> Step:
    return lambda _f: value


def _carried(info: HeaderInfo, column: str) -> tuple[Step, Step]:
    """The carrier's own value and the carried one, out of the carrier's one field."""
    registry = info.registry
    carried = registry.by_name[column]
    carrier = registry.by_name[carried.carried_by]
    pos = info.index[carrier.name]
    split, own, other = carrier.split, carrier.clean, carried.carried_clean or carried.clean
    assert split is not None
    return (lambda f: own(split(f[pos])[0])), (lambda f: other(split(f[pos])[1]))


class RowValidator:
    """Cleans one row in column order (the first fault raises RowFault); returns the cleaned
    values and the attributes."""

    def __init__(self, header: HeaderInfo) -> None:
        self.width = header.width
        registry = header.registry
        steps: dict[str, Step] = {}
        for c in registry.columns:
            if header.carried(c.name):
                steps[c.carried_by], steps[c.name] = _carried(header, c.name)
            elif c.name not in steps:
                pos = header.index.get(c.name)
                if pos is None:
                    steps[c.name] = _constant(c.absent)
                else:
                    steps[c.name] = _step(_cached(c.clean) if c.cache else c.clean, pos)
        self._steps = [steps[name] for name in registry.names]
        # Columns read from a field of their own (not carried): (name, position, index).
        self._own = [
            (c.name, header.index[c.name], i)
            for i, c in enumerate(registry.columns)
            if c.name in header.index
            and not any(header.carried(o.name) and o.carried_by == c.name for o in registry.columns)
        ]
        self._attributes = header.attributes

    def changed(self, f: list[str], values: list[Any]) -> list[tuple[str, str, str]]:
        """The columns whose value cleaning changed beyond trimming: (column, raw, cleaned)."""
        out = []
        for name, pos, i in self._own:
            raw = f[pos].strip()
            value = values[i]
            text = "" if value is None else str(value)
            if raw and raw != text:
                out.append((name, raw, text))
        return out

    def clean(self, f: list[str]) -> tuple[list[Any], dict[str, str] | None]:
        if len(f) != self.width:
            raise RowFault(
                "ROW_LENGTH", None, f"row has {len(f)} fields; the header has {self.width}"
            )
        values = [step(f) for step in self._steps]
        if not self._attributes:
            return values, None
        attributes = {}
        for pos, name in self._attributes:
            value = rules.clean_attribute(f[pos], name)
            if value:
                attributes[name] = value
        return values, attributes
