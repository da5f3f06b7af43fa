"""The product row, declared once: its columns, their stored types, and its canonical line.

Everything that handles a product's columns derives from ``PRODUCT``: the parse worker's
validation order and fast path (``consumer.validate``, ``consumer.fastpath``), the row hash,
the staging table, the COPY column lists and the merge (``service.core.store.products``),
and migration 0007's recompute of stored hashes.

**The canonical line** of a row is its cleaned values in ``PRODUCT`` order, joined by
commas, an absent optional value written as its ``default`` ('' for text, ``0`` for
quantity, ``true`` for active), free text quoted only when it must be (it holds a comma, a
quote or a line break; quotes doubled). A machine-written feed with the standard header is
made of canonical lines already, so the parse worker can recognise an unchanged row by
hashing its line as read, before any parsing (see ``consumer.known``). PostgreSQL reads
the same line with ``COPY ... (FORMAT csv)``: an unquoted empty field is NULL.

**The row hash** is xxh3-64 of the canonical line's UTF-8 bytes, stored as a signed
``bigint``; the **sku hash** is xxh3-64 of the sku. 64 bits: two different rows of one sku
hash alike with probability 2^-64 (the change would go unnoticed); two skus of one file
(a few million) collide with probability about n²/2^65 < 10^-6.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import xxhash


class Column(NamedTuple):
    name: str
    sql: str  # the type in products (and in staging)
    required: bool  # a row without it is rejected
    free_text: bool  # may hold the delimiter or quotes: quoted in the canonical line if so
    default: str  # the canonical text of an empty or absent value ('' = NULL)


# Column order of feed-format.md: the first fault in this order is the one reported.
PRODUCT: tuple[Column, ...] = (
    Column("sku", "text", True, False, ""),
    Column("name", "text", True, True, ""),
    Column("description", "text", False, True, ""),
    Column("price", "numeric(12,2)", True, False, ""),
    Column("currency", "char(3)", True, False, ""),
    Column("quantity", "integer", False, False, "0"),
    Column("category", "text", False, True, ""),
    Column("brand", "text", False, True, ""),
    Column("gtin", "text", False, False, ""),
    Column("updated_at", "timestamptz", False, False, ""),
    Column("active", "boolean", False, False, "true"),
)
NAMES: tuple[str, ...] = tuple(c.name for c in PRODUCT)
REQUIRED: tuple[str, ...] = tuple(c.name for c in PRODUCT if c.required)
# What COPY sends after the columns: the row's hashes (computed by the parse worker).
HASHES: tuple[str, ...] = ("row_hash", "sku_hash")

_MUST_QUOTE = re.compile('[,"\r\n]')
_FREE_TEXT = tuple(c.free_text for c in PRODUCT)
_DEFAULTS = tuple(c.default for c in PRODUCT)
_SIGN = 1 << 63
_WRAP = 1 << 64


def canonical_field(value: object, free_text: bool, default: str) -> str:
    if value is None or value == "":
        return default
    text = str(value)
    if free_text and _MUST_QUOTE.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def canonical_line(values: Sequence[object]) -> str:
    """The canonical line (no line break) of cleaned values in ``PRODUCT`` order."""
    return ",".join(map(canonical_field, values, _FREE_TEXT, _DEFAULTS))


def signed(value: int) -> int:
    """An unsigned 64-bit hash as PostgreSQL's signed bigint."""
    return value - _WRAP if value >= _SIGN else value


def row_hash(line: bytes) -> int:
    return signed(xxhash.xxh3_64_intdigest(line))


def sku_hash(sku: bytes) -> int:
    return signed(xxhash.xxh3_64_intdigest(sku))


# -- SQL derived from the declaration ----------------------------------------------------


def stage_ddl(table: str) -> str:
    """An UNLOGGED staging table: the columns as stored, the hashes, and the line."""
    cols = ", ".join(
        f"{c.name} {c.sql}{' NOT NULL' if c.required or c.default else ''}" for c in PRODUCT
    )
    return (
        f"CREATE UNLOGGED TABLE {table} ({cols}, row_hash bigint NOT NULL,"
        " sku_hash bigint NOT NULL, line integer NOT NULL)"
    )


STAGE_COLUMNS: tuple[str, ...] = (*NAMES, *HASHES, "line")
DIRECT_COLUMNS: tuple[str, ...] = (*NAMES, *HASHES, "feed_id", "first_seen_job")
# The merge's SET list: every column but the key, from the staged row ``d``.
UPDATE_SET = ", ".join(f"{name} = d.{name}" for name in (*NAMES[1:], *HASHES))
COLUMN_LIST = ", ".join((*NAMES, *HASHES))


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
