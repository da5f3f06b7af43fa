"""The product row, declared once: the column registry.

Each product column is one ``Column`` below: its name and the header names it is also
known by (aliases, Merchant Center's among them), its cleaner and rejection code
(``service.core.rules``), its fast-path pattern, its stored SQL type, its canonical default
and its API constraints. Everything that handles a product's columns derives from
``PRODUCT``: the header's mapping and the slow path's validation (``consumer.validate``),
the fast path (``consumer.fastpath``), the canonical line and the row hash (here), staging,
COPY and the merge (``service.core.store.products``), the rehash of stored rows
(``service.core.rehash``), the API's ``Product`` struct (and so OpenAPI), the column table
of docs/feed-format.md (a test holds it to ``column_table()``) and the bench's reference
table. A new column is: one ``Column`` here, one migration adding it to ``products``, and
a row in the docs' table (see README, "Adding a product column").

**The canonical line** of a row is its cleaned values in ``PRODUCT`` order, joined by
commas, an absent optional value written as its ``default`` ('' for text, ``0`` for
quantity, ``true`` for active), free text quoted only when it must be (it holds a comma, a
quote or a line break; quotes doubled); then, only when the row has attributes (columns
kept beyond the registry's), one more field: the attributes as a JSON object with sorted
keys, quoted. A machine-written feed with the standard header is made of canonical lines
already, so the parse worker can recognise an unchanged row by hashing its line as read,
before any parsing (see ``consumer.known``). PostgreSQL reads the same line with
``COPY ... (FORMAT csv)``: an unquoted empty field is NULL.

**The row hash** is xxh3-64 of the canonical line's UTF-8 bytes, stored as a signed
``bigint``; the **sku hash** is xxh3-64 of the sku. 64 bits: two different rows of one sku
hash alike with probability 2^-64 (the change would go unnoticed); two skus of one file
(a few million) collide with probability about n²/2^65 < 10^-6.

``CANONICAL_VERSION`` names the canonical form: when a change to this module changes the
canonical line of stored rows, bump it, and the next migration rehashes every stored
product in batches (``service.core.rehash``), no per-migration code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import xxhash
from msgspec import Meta

from service.core import rules

CANONICAL_VERSION = 1

# (the delimiter escaped for a character class, strict) -> the column's fast-path pattern.
# ``strict``: the line must also be the row's canonical line (quoted only when it must be,
# quantity and active written out). A column whose values the fast path also checks with
# its cleaner (``checked``) has exactly one capture group: its value.
Pattern = Callable[[str, bool], str]


def _fixed(pattern: str, strict_only: str = "") -> Pattern:
    """A pattern independent of the delimiter; ``strict_only``: what a loose (non-strict)
    match makes optional (an empty quantity is canonical only written out)."""
    return lambda x, strict: pattern + ("" if strict or not strict_only else strict_only)


def _trimmed(x: str, limit: int | None) -> str:
    # Unquoted, no quote, no surrounding white space; a length cap as a lookahead.
    cap = f"(?=[^{x}\\n]{{1,{limit}}}(?:[{x}]|\\n))" if limit else ""
    return f'{cap}(?!\\s)[^{x}"\\n\\r]++(?<!\\s)'


def _quoted(x: str, strict: bool) -> str:
    quoted = '"(?!\\s)(?!"(?:[' + x + ']|\\n))(?:[^"\\n\\r]++|"")*+(?<!\\s)"'
    if strict:  # quoted only when it holds the delimiter or a quote
        quoted = '"(?=[^"\\n\\r' + x + "]*+(?:[" + x + ']|""))' + quoted[1:]
    return quoted


def _optional_text(limit: int | None, quoting: bool) -> Pattern:
    """Optional trimmed text; ``limit`` None: guaranteed by the fast path's MAX_LINE."""
    if quoting:
        return lambda x, strict: f"(?:{_trimmed(x, limit)}|{_quoted(x, strict)})?"
    return lambda x, strict: f"(?:{_trimmed(x, limit)})?"


def _name(x: str, strict: bool) -> str:
    return f'(?=[^{x}\\n]{{1,300}}(?:[{x}]|\\n))[^\\s{x}"]++(?: [^\\s{x}"]++)*+'


def any_field(x: str, strict: bool) -> str:
    """A column the fast path does not check (an attribute, an ignored column): any field."""
    return f'(?:[^{x}"\\n\\r]*+|"(?:[^"\\n\\r]++|"")*+")'


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql: str  # the type in products (and in staging)
    clean: Callable[[str], Any]  # raw field -> cleaned value; raises RowFault with ``code``
    code: str  # the rejection code of its rule
    fast: Pattern
    rule: str  # its cleaning and rule, for docs/feed-format.md and OpenAPI
    api: Any  # the type of its value in the API's Product (constraints as Meta)
    required: bool = False  # a row without it is rejected
    free_text: bool = False  # may hold the delimiter or quotes: quoted in the line if so
    default: str = ""  # the canonical text of an empty or absent value ('' = NULL)
    checked: bool = False  # the fast path checks each distinct value with ``clean`` too
    cache: bool = True  # the slow path memoises ``clean`` (values repeat)
    aliases: tuple[str, ...] = ()  # other header names, in order of precedence
    # Another column whose field may carry this one's value, and how to split it out
    # (Merchant Center's ``price`` of ``15.00 USD`` carries the currency); used when the
    # header has no column of this one's.
    carried_by: str = ""
    split: Callable[[str], tuple[str, str]] | None = None  # on the carrier: (own, carried)
    carrier_fast: str = ""  # on the carrier: its pattern with the carried value as group 1
    carried_clean: Callable[[str], Any] | None = None  # the carried value's cleaner

    @property
    def absent(self) -> Any:
        """The cleaned value of a column the header lacks (optional columns only)."""
        return self.clean("")


COLUMNS: tuple[Column, ...] = (
    Column(
        "sku",
        "text",
        rules.clean_sku,
        "INVALID_SKU",
        _fixed("[A-Za-z0-9._/-]{1,64}"),
        "trim | 1–64 of `A-Z a-z 0-9 . _ - /`; once per file (a later repeat is"
        " `DUPLICATE_SKU`, naming the first line)",
        Annotated[str, Meta(pattern="^[A-Za-z0-9._/-]{1,64}$")],
        required=True,
        cache=False,
        aliases=("id", "item_id", "offer_id", "product_id"),
    ),
    Column(
        "name",
        "text",
        rules.clean_name,
        "INVALID_NAME",
        _name,
        "trim, inner whitespace collapsed | 1–300 characters",
        Annotated[str, Meta(min_length=1, max_length=300)],
        required=True,
        free_text=True,
        cache=False,
        aliases=("title", "product_name"),
    ),
    Column(
        "description",
        "text",
        rules.clean_description,
        "INVALID_DESCRIPTION",
        _optional_text(None, quoting=True),
        "trim | ≤ 5000 characters",
        Annotated[str, Meta(max_length=5000)] | None,
        free_text=True,
        cache=False,
        aliases=("product_description",),
    ),
    Column(
        "price",
        "numeric(12,2)",
        rules.clean_price,
        "INVALID_PRICE",
        _fixed("(?:0|[1-9][0-9]{0,9})\\.[0-9]{2}"),
        "trim; one leading `$`, `€` or `£` dropped; thousands commas dropped in `1,234.50`"
        " form; with no currency column, `15.00 USD` (Merchant Center's form) gives the"
        " currency too | a decimal ≥ 0 with at most 2 decimals, below 10^10",
        Annotated[str, Meta(pattern="^[0-9]{1,10}\\.[0-9]{2}$")],
        required=True,
        cache=False,
        split=rules.split_amount,
        carrier_fast="(?:0|[1-9][0-9]{0,9})\\.[0-9]{2} ([A-Z]{3})",
    ),
    Column(
        "currency",
        "char(3)",
        rules.clean_currency,
        "INVALID_CURRENCY",
        _fixed("([A-Z]{3})"),
        "trim, upper-case | an ISO 4217 code",
        Annotated[str, Meta(pattern="^[A-Z]{3}$")],
        required=True,
        checked=True,
        aliases=("currency_code",),
        carried_by="price",
        carried_clean=rules.clean_carried_currency,
    ),
    Column(
        "quantity",
        "integer",
        rules.clean_quantity,
        "INVALID_QUANTITY",
        _fixed("(?:0|[1-9][0-9]{0,8})", strict_only="?"),  # below 2^31 - 1
        "trim; empty = 0 | an integer 0 … 2^31−1",
        Annotated[int, Meta(ge=0, le=rules.MAX_QUANTITY)],
        default="0",
        cache=False,
        aliases=("stock", "inventory", "qty", "quantity_available"),
    ),
    Column(
        "category",
        "text",
        rules.clean_category,
        "INVALID_CATEGORY",
        _optional_text(200, quoting=False),
        "trim | ≤ 200 characters",
        Annotated[str, Meta(max_length=200)] | None,
        free_text=True,
        aliases=("product_type", "google_product_category"),
    ),
    Column(
        "brand",
        "text",
        rules.clean_brand,
        "INVALID_BRAND",
        _optional_text(200, quoting=False),
        "trim | ≤ 200 characters",
        Annotated[str, Meta(max_length=200)] | None,
        free_text=True,
        aliases=("manufacturer",),
    ),
    Column(
        "gtin",
        "text",
        rules.clean_gtin,
        "INVALID_GTIN",
        _fixed("((?:[0-9]{8}|[0-9]{12,14})?)"),
        "trim; spaces and dashes dropped | 8, 12, 13 or 14 digits with a valid GS1 check digit",
        Annotated[str, Meta(pattern="^(?:[0-9]{8}|[0-9]{12,14})$")] | None,
        checked=True,
        aliases=("ean", "upc", "isbn"),
    ),
    Column(
        "updated_at",
        "timestamptz",
        rules.clean_updated_at,
        "INVALID_TIMESTAMP",
        _fixed("((?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]{6})?Z)?)"),
        "trim | RFC 3339 date-time with an offset or `Z`, or a date `YYYY-MM-DD` (midnight"
        " UTC); stored in UTC",
        Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | None,
        checked=True,
        aliases=("last_updated", "modified_at"),
    ),
    Column(
        "active",
        "boolean",
        rules.clean_active,
        "INVALID_BOOLEAN",
        _fixed("(?:true|false)", strict_only="?"),
        "trim, lower-case; empty = true | one of `true false yes no y n 1 0`",
        bool,
        default="true",
        aliases=("enabled", "is_active"),
    ),
)

ATTRIBUTES = "attributes"  # the stored column of the kept columns: jsonb, values as text
HASHES: tuple[str, ...] = ("row_hash", "sku_hash")  # what COPY sends after the columns
_MUST_QUOTE = re.compile('[,"\r\n]')
_SIGN = 1 << 63
_WRAP = 1 << 64
_attributes_encoder = msgspec.json.Encoder(order="sorted")


def normal_header(name: str) -> str:
    """A header name as matched against names and aliases: trimmed, lower-case, spaces and
    dashes as underscores (``Image Link`` is ``image_link``)."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def canonical_field(value: object, free_text: bool, default: str) -> str:
    if value is None or value == "":
        return default
    text = str(value)
    if free_text and _MUST_QUOTE.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def attributes_field(attributes: Mapping[str, str]) -> str:
    """The canonical line's last field: the attributes as JSON, sorted keys, quoted."""
    return '"' + _attributes_encoder.encode(attributes).decode().replace('"', '""') + '"'


class Registry:
    """The columns, and everything derived from their declaration. ``PRODUCT`` is the
    product's; a test builds another (with one more column) and runs it all."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        self.names: tuple[str, ...] = tuple(c.name for c in self.columns)
        if len(set(self.names)) != len(self.names) or ATTRIBUTES in self.names:
            raise ValueError(f"column names must be unique and not {ATTRIBUTES!r}")
        if self.columns[-1].free_text or self.columns[-1].default == "":
            # A canonical line ends in the attributes field (quoted) or in the last
            # column's field: never quoted, never empty, so the two are told apart.
            raise ValueError("the last column must be neither free text nor without a default")
        self.by_name = {c.name: c for c in self.columns}
        self.required: tuple[str, ...] = tuple(c.name for c in self.columns if c.required)
        # Header names other than the columns' own: alias -> (column, rank)
        self.aliases: dict[str, tuple[str, int]] = {}
        for c in self.columns:
            for rank, alias in enumerate(c.aliases, start=1):
                key = normal_header(alias)
                if key in self.aliases or key in self.by_name:
                    raise ValueError(f"alias {alias!r} is declared twice")
                self.aliases[key] = (c.name, rank)
        self._free = tuple(c.free_text for c in self.columns)
        self._defaults = tuple(c.default for c in self.columns)
        self.width = len(self.columns)
        stored = (*self.names, ATTRIBUTES)
        self.stage_columns: tuple[str, ...] = (*stored, *HASHES, "line")
        self.direct_columns: tuple[str, ...] = (
            *stored,
            *HASHES,
            "feed_id",
            "first_seen_job",
            "first_seen_run",
        )
        # The merge's SET list: every column but the key, from the staged row ``d``.
        self.update_set = ", ".join(f"{n} = d.{n}" for n in (*stored[1:], *HASHES))
        self.column_list = ", ".join((*stored, *HASHES))
        self.stored_list = ", ".join(stored)
        # What differs between the stored row ``o`` and the staged one ``d``: the names of
        # the columns, then ``attributes.<key>`` of each attribute (the change list's).
        differs = ", ".join(
            f"CASE WHEN o.{n} IS DISTINCT FROM d.{n} THEN '{n}' END" for n in self.names[1:]
        )
        self.changed_columns = (
            f"array_remove(ARRAY[{differs}], NULL) || CASE WHEN o.{ATTRIBUTES} IS DISTINCT"
            f" FROM d.{ATTRIBUTES} THEN jsonb_changed_keys(o.{ATTRIBUTES}, d.{ATTRIBUTES})"
            " ELSE '{}' END"
        )

    def canonical_line(
        self, values: Sequence[object], attributes: Mapping[str, str] | None = None
    ) -> str:
        """The canonical line (no line break) of cleaned values in column order."""
        if len(values) != self.width:
            raise ValueError(f"{len(values)} values for {self.width} columns")
        line = ",".join(map(canonical_field, values, self._free, self._defaults))
        return line + "," + attributes_field(attributes) if attributes else line

    def _columns_ddl(self) -> str:
        return ", ".join(
            f"{c.name} {c.sql}{' NOT NULL' if c.required or c.default else ''}"
            for c in self.columns
        )

    def stage_ddl(self, table: str) -> str:
        """An UNLOGGED staging table: the columns as stored, the hashes, and the line."""
        cols = self._columns_ddl()
        return (
            f"CREATE UNLOGGED TABLE {table} ({cols}, {ATTRIBUTES} jsonb,"
            " row_hash bigint NOT NULL, sku_hash bigint NOT NULL, line integer NOT NULL)"
        )

    def table_ddl(self, table: str) -> str:
        """A plain keyed table of the columns (the bench's ``\\copy`` reference, tests)."""
        return f"CREATE TABLE {table} ({self._columns_ddl()}, PRIMARY KEY ({self.names[0]}))"

    def stored_line(self, record: Mapping[str, Any]) -> bytes:
        """A stored product's canonical line (asyncpg's record of its stored columns)."""
        raw = record[ATTRIBUTES]
        attributes = msgspec.json.decode(raw) if raw else None
        values = [stored_text(record[name]) for name in self.names]
        return self.canonical_line(values, attributes).encode()

    def column_table(self) -> str:
        """The column table of docs/feed-format.md (a test holds the docs to it)."""
        lines = [
            "| column | required | also read from | cleaning | rule (else rejected with) |",
            "|---|---|---|---|---|",
        ]
        for c in self.columns:
            required = "yes" if c.required else "no"
            if c.carried_by:
                required += f" (or carried by `{c.carried_by}`)"
            also = ", ".join(f"`{a}`" for a in c.aliases) or "—"
            cleaning, rule = c.rule.split(" | ")
            lines.append(f"| `{c.name}` | {required} | {also} | {cleaning} | {rule} (`{c.code}`) |")
        return "\n".join(lines)

    def api_struct(self) -> type[msgspec.Struct]:
        """The API's product: the cleaned columns by name, the attributes, and when it last
        changed or was deleted."""
        fields: list[tuple[str, Any]] = [(c.name, c.api) for c in self.columns]
        fields += [
            (ATTRIBUTES, dict[str, str]),
            ("last_changed_at", Annotated[str, Meta(extra_json_schema={"format": "date-time"})]),
            (
                "deleted_at",
                Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | None,
            ),
        ]
        return msgspec.defstruct("Product", fields, kw_only=True)


PRODUCT = Registry(COLUMNS)
NAMES = PRODUCT.names
REQUIRED = PRODUCT.required
canonical_line = PRODUCT.canonical_line


def signed(value: int) -> int:
    """An unsigned 64-bit hash as PostgreSQL's signed bigint."""
    return value - _WRAP if value >= _SIGN else value


def row_hash(line: bytes) -> int:
    return signed(xxhash.xxh3_64_intdigest(line))


def sku_hash(sku: bytes) -> int:
    return signed(xxhash.xxh3_64_intdigest(sku))


def stored_text(value: object) -> str | None:
    """A stored value (as asyncpg returns it) as the cleaned text it was loaded from."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        utc = value.astimezone(UTC).replace(tzinfo=None)
        return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"
    return str(value)  # numeric(12,2) as Decimal keeps its two decimals; integer
