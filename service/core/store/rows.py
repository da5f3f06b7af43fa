"""Typed rows: what the store hands out instead of ``asyncpg.Record``.

A row struct names the columns a caller may read and their types, so a renamed column
fails mypy and the tests at the query, not at a ``row["..."]`` three modules away.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

import asyncpg
import msgspec

from service.core.contracts import Mode

R = TypeVar("R", bound=msgspec.Struct)


def one(cls: type[R], record: asyncpg.Record | None) -> R | None:
    """The row as ``cls`` (its fields are the query's columns, by name), or None."""
    return None if record is None else cls(**record)


def many(cls: type[R], records: Iterable[asyncpg.Record]) -> list[R]:
    return [cls(**r) for r in records]


def raw(text: str | None) -> msgspec.Raw | None:
    """A JSON column read as text, passed on to a response as it is."""
    return None if text is None else msgspec.Raw(text.encode())


async def lock_by_id(
    conn: asyncpg.Connection, cls: type[R], table: str, key: str, tenant_id: int | None
) -> R | None:
    """The row of ``table`` whose id is ``key`` (the tenant's, if one is named), as ``cls``,
    locked until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {columns(cls)} FROM {table}"
        " WHERE id = $1 AND ($2::bigint IS NULL OR tenant_id = $2) FOR UPDATE",
        key,
        tenant_id,
    )
    return one(cls, row)


def columns(cls: type[msgspec.Struct]) -> str:
    """The select list of a row struct: its fields, by name."""
    return ", ".join(cls.__struct_fields__)


class JobRow(msgspec.Struct, frozen=True):
    """A job as the state machine reads it (``lifecycle``): never sent to a client."""

    id: str
    tenant_id: int
    feed_id: str
    job_type: str
    status: str
    attempt: int
    options: str | None
    losses: int
    interruptions: int
    cancel_requested: bool


class FeedRow(msgspec.Struct, frozen=True):
    """A feed's stored settings and state (the ``feeds`` table)."""

    id: str
    tenant_id: int
    name: str
    s3_uri: str
    source: str
    mode: Mode
    delimiter: str
    max_rejected_rows: int | None
    max_deleted_ratio: float
    encoding: str
    column_map: str  # JSON: {"their header": "our column"}
    unknown_columns: str
    validation_job_id: str
    submission_job_id: str
    created_at: datetime
    last_loaded_at: datetime | None
    status: str
    watch: str | None
    run_pending: bool


class RunTarget(msgspec.Struct, frozen=True):
    """What a run is queued from: a feed's run defaults and its (locked) validation job."""

    feed_id: str
    mode: Mode
    delimiter: str
    max_rejected_rows: int | None
    max_deleted_ratio: float
    encoding: str
    column_map: str  # JSON
    unknown_columns: str
    id: str  # the validation job
    attempt: int
    status: str
