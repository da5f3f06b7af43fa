"""The product row is declared once: a copy of the registry with one more column runs
everything that derives from it (header aliases, the slow and the fast path, the canonical
line and hash, staging, COPY, the merge, the rehash, the docs table and the API struct)
against the real PostgreSQL, given only the one migration that adds the column. And a
``CANONICAL_VERSION`` bump rehashes the stored products, generically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from msgspec import Meta

from consumer.fastpath import FastPath
from consumer.recognise import Recogniser
from consumer.validate import HeaderInfo, RowValidator
from service.core import product
from service.core.migrate import migrate
from service.core.product import COLUMNS, PRODUCT, Column, Registry, _optional_text, row_hash
from service.core.rehash import ensure_canonical, rehash_products
from service.core.rules import RowFault
from service.core.store import products as stage
from tests.integration.conftest import run_and_wait, upload_feed


def clean_color(value: str) -> str | None:
    text = value.strip().lower()
    if len(text) > 40:
        raise RowFault("INVALID_COLOR", "color", f"color is {len(text)} characters; at most 40")
    return text or None


COLOR = Column(
    "color",
    "text",
    clean_color,
    "INVALID_COLOR",
    _optional_text(40, quoting=False),
    "trim, lower-case | ≤ 40 characters",
    Annotated[str, Meta(max_length=40)] | None,
    free_text=True,
    checked=False,
    aliases=("colour", "farbe"),
)
# Before ``active``: the last column must have a default (product.Registry says why).
EXTENDED = Registry([*COLUMNS[:-1], COLOR, COLUMNS[-1]])
HEADER = ["Colour", "sku", "name", "price", "currency", "size"]
ROWS = [["Red", "A-1", "Cap", "1.50", "EUR", "M"], ["", "A-2", "Hat", "2", "usd", ""]]


def test_the_added_column_is_read_validated_and_fast():
    info = HeaderInfo(HEADER, registry=EXTENDED)
    assert info.index["color"] == 0 and info.attributes == [(5, "size")]
    slow = RowValidator(info)
    lines = [EXTENDED.canonical_line(*slow.clean(r)).encode() for r in ROWS]
    assert lines == [
        b'A-1,Cap,,1.50,EUR,0,,,,,red,true,"{""size"":""M""}"',
        b"A-2,Hat,,2.00,USD,0,,,,,,true",
    ]
    with pytest.raises(RowFault) as fault:
        slow.clean(["x" * 41, "A-3", "n", "1", "EUR", ""])
    assert fault.value.code == "INVALID_COLOR"
    # The fast path, built from the same declaration, gives the same lines for clean rows.
    clean = b"red,A-1,Cap,1.50,EUR,M\n,A-2,Hat,2.00,USD,\n"
    taken = FastPath(info, ",").take(clean, None)
    assert taken is not None and taken.canon == lines
    assert taken.hashes.tolist() == [row_hash(line) for line in lines]
    # With the extended standard header, lines are canonical as they are read.
    standard = FastPath(HeaderInfo(list(EXTENDED.names), registry=EXTENDED), ",")
    assert standard.canonical
    line = b"A-1,Cap,,1.50,EUR,0,,,,,red,true"
    assert standard.take(line + b"\n", None).canon == [line]  # type: ignore[union-attr]
    # Docs and API derive from it too.
    assert "| `color` | no | `colour`, `farbe` |" in EXTENDED.column_table()
    api = EXTENDED.api_struct()
    assert "color" in api.__struct_fields__
    schema = msgspec.json.schema(api)
    assert schema["$defs"]["Product"]["properties"]["color"]["anyOf"][0]["maxLength"] == 40


@pytest.fixture
async def extended_db(db) -> AsyncIterator[object]:
    """A products table with the one migration the new column needs, in a schema of its own
    (the transaction is rolled back: nothing stays)."""
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "CREATE SCHEMA registry_test;"
            " CREATE TABLE registry_test.products (LIKE public.products INCLUDING ALL);"
            " ALTER TABLE registry_test.products ADD COLUMN color text;"  # the migration
            " SET LOCAL search_path = registry_test, public"
        )
        try:
            yield conn
        finally:
            await tx.rollback()


async def _merge_rows(conn: Any, table: str, records: list[list[str]], attempt: int) -> Any:
    """Stage ``records`` (read with HEADER) and merge them as run ``attempt``, recorded."""
    slow = RowValidator(HeaderInfo(HEADER, registry=EXTENDED))
    rows = Recogniser(None, "", ",", attributes=True, registry=EXTENDED)
    for n, record in enumerate(records, start=2):
        line = EXTENDED.canonical_line(*slow.clean(record)).encode()
        rows.add_row(n, line, row_hash(line))
    payload = rows.flush([]).payload

    async def source() -> AsyncIterator[bytes]:
        yield payload

    await stage.create_stage(conn, table, EXTENDED)
    await stage.copy_rows(conn, table, source(), EXTENDED)
    return await stage.merge(
        conn,
        table,
        "FD-REG",
        ("JV-REG", attempt),
        snapshot=False,
        gone=None,
        few=False,
        fresh=True,
        record=True,
        registry=EXTENDED,
    )


async def test_the_added_column_is_staged_merged_and_rehashed(extended_db):
    conn = extended_db
    counts = await _merge_rows(conn, "stage_registry", ROWS, 1)
    assert counts.inserted == 2
    stored = await conn.fetch(  # type: ignore[attr-defined]
        f"SELECT sku, {EXTENDED.stored_list}, row_hash, sku_hash FROM products ORDER BY sku"
    )
    assert [r["color"] for r in stored] == ["red", None]
    assert stored[0]["attributes"] == '{"size": "M"}'
    # The stored values give back the hashes the worker computed: nothing to rehash...
    assert all(row_hash(EXTENDED.stored_line(r)) == r["row_hash"] for r in stored)
    assert await rehash_products(conn, EXTENDED) == 0  # type: ignore[arg-type]
    # ...until the hashes are stale: the generic rehash puts them right.
    await conn.execute("UPDATE products SET row_hash = 0")  # type: ignore[attr-defined]
    assert await rehash_products(conn, EXTENDED) == 2  # type: ignore[arg-type]
    again = await conn.fetch("SELECT row_hash FROM products ORDER BY sku")  # type: ignore[attr-defined]
    assert [r["row_hash"] for r in again] == [r["row_hash"] for r in stored]
    # A change of the added column (and of an attribute) is an update that names them.
    changed = [["Blue", "A-1", "Cap", "1.50", "EUR", "L"], ROWS[1]]
    counts = await _merge_rows(conn, "stage_registry_2", changed, 2)
    assert (counts.inserted, counts.updated) == (0, 1)
    recorded = await conn.fetch(  # type: ignore[attr-defined]
        "SELECT attempt, sku, change, columns FROM product_changes WHERE job_id = 'JV-REG'"
        " ORDER BY seq"
    )
    assert [tuple(r) for r in recorded] == [
        (1, "A-1", "inserted", None),
        (1, "A-2", "inserted", None),
        (2, "A-1", "updated", ["color", "attributes.size"]),
    ]


async def test_a_canonical_version_bump_rehashes_stored_products(client, acme, consumer, db):
    data = b"sku,name,price,currency,color\nA-1,Cap,1.00,EUR,red\nA-2,Hat,2.00,EUR,\n"
    ids = await upload_feed(client, acme, data)
    assert (await run_and_wait(client, acme, ids["validation_job_id"]))["result"]["inserted"] == 2
    right = await db.fetch("SELECT sku, row_hash FROM products ORDER BY sku")
    async with db.acquire() as conn:
        await conn.execute("UPDATE products SET row_hash = 0")  # as if hashed another way
        assert await ensure_canonical(conn) == 0  # same version: nothing is looked at
        await conn.execute("UPDATE canonical_form SET version = 0")
        await migrate(conn)  # what every process runs at start
        assert await conn.fetchval("SELECT version FROM canonical_form") == (
            product.CANONICAL_VERSION
        )
    assert await db.fetch("SELECT sku, row_hash FROM products ORDER BY sku") == right
    again = await run_and_wait(client, acme, ids["validation_job_id"], {"force": True})
    assert again["result"]["unchanged"] == 2


def test_the_docs_column_table_is_the_registrys():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "feed-format.md").read_text()
    assert PRODUCT.column_table() in docs
