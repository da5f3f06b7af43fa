"""The products of a feed as the API reads them (``GET /feeds/{id}/products``): keyset
pages in sku order, each column in its API form, the select list derived from the column
registry (``service.core.product``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from service.core.contracts import Product
from service.core.product import ATTRIBUTES, PRODUCT, Registry, stored_text


def _select(registry: Registry) -> str:
    """Each column as the API shows it: amounts as exact text (times: see ``_product``)."""
    out = []
    for c in registry.columns:
        if c.sql.startswith("numeric"):
            out.append(f"{c.name}::text AS {c.name}")
        else:
            out.append(c.name)
    out += [
        f"{ATTRIBUTES}::text AS {ATTRIBUTES}",
        "rfc3339(last_changed_at) AS last_changed_at",
        "rfc3339(deleted_at) AS deleted_at",
    ]
    return ", ".join(out)


_SELECT = _select(PRODUCT)
_EMPTY = msgspec.Raw(b"{}")
# Times in their canonical form, as loaded (RFC 3339 UTC, microseconds when there are any).
_TIMES = [c.name for c in PRODUCT.columns if c.sql.startswith("timestamptz")]


def _product(record: asyncpg.Record) -> Any:
    fields = dict(record)
    for name in _TIMES:
        fields[name] = stored_text(fields[name])
    text = fields[ATTRIBUTES]
    fields[ATTRIBUTES] = msgspec.Raw(text.encode()) if text else _EMPTY  # stored JSON as is
    return Product(**fields)


async def page(
    db: asyncpg.Pool,
    feed_id: str,
    *,
    after: str | None,
    limit: int,
    sku: str | None,
    changed_since: datetime | None,
    include_deleted: bool,
) -> list[Any]:
    """Up to ``limit`` products of the feed after the sku ``after``, in sku order (the
    primary key's: each page one index range)."""
    rows = await db.fetch(
        f"SELECT {_SELECT} FROM products WHERE feed_id = $1"
        " AND ($2::text IS NULL OR sku > $2) AND ($3::text IS NULL OR sku = $3)"
        " AND ($4::timestamptz IS NULL OR last_changed_at >= $4)"
        " AND ($5::boolean OR deleted_at IS NULL)"
        " ORDER BY sku LIMIT $6",
        feed_id,
        after,
        sku,
        changed_since,
        include_deleted,
        limit,
    )
    return [_product(r) for r in rows]


async def one(db: asyncpg.Pool, feed_id: str, sku: str) -> Any | None:
    """The feed's product of that sku, deleted or not."""
    row = await db.fetchrow(
        f"SELECT {_SELECT} FROM products WHERE feed_id = $1 AND sku = $2", feed_id, sku
    )
    return None if row is None else _product(row)


async def by_skus(db: asyncpg.Pool, feed_id: str, skus: list[str]) -> dict[str, Any]:
    """The feed's products of these skus, deleted or not, by sku."""
    rows = await db.fetch(
        f"SELECT {_SELECT} FROM products WHERE feed_id = $1 AND sku = ANY($2::text[])",
        feed_id,
        skus,
    )
    return {r["sku"]: _product(r) for r in rows}
