"""Reading and checking request bodies and query parameters; writing JSON responses."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from service.core.contracts import TAG, encode
from service.core.contracts import encode_cursor as encode_cursor  # re-exported
from service.core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from service.gateway.inputs import check_tree

TAG_PATTERN = re.compile(TAG)


T = TypeVar("T")
R = TypeVar("R")


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=encode(obj),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _validation_message(
    exc: msgspec.ValidationError | msgspec.DecodeError,
) -> tuple[str, str | None]:
    text = str(exc)
    field = None
    if " - at `$." in text:
        text, _, where = text.partition(" - at `$.")
        field = where.rstrip("`")
        if text.startswith("Object missing required field") and "`" in text:
            field = f"{field}.{text.split('`')[1]}"  # the missing one, inside that object
    elif text.startswith(("Object contains unknown field", "Object missing required field")):
        field = text.split("`")[1] if "`" in text else None
    return text, field


async def read_json(
    request: web.Request,
    kind: type[T],
    *,
    limit: int,
    optional: bool = False,
    raw: bytes | None = None,
) -> T | None:
    """Decode a JSON body into ``kind``; 415/413/400 with a sentence naming what is wrong."""
    if raw is None:
        if request.content_length is None and not request.can_read_body:
            if optional:
                return None
        if request.can_read_body and request.content_type != "application/json":
            raise UnsupportedMediaType(
                f"Expected Content-Type application/json, got {request.content_type}",
                details={"content_type": request.content_type},
            )
        raw = await read_limited(request, limit)
    if not raw.strip():
        if optional:
            return None
        raise InvalidRequest("The request body is empty; a JSON object is required")
    try:
        decoded = msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        text, field = _validation_message(exc)
        message = f"Invalid JSON body: {text}" + (f" (field `{field}`)" if field else "")
        raise InvalidRequest(message, details={"field": field} if field else {}) from exc
    check_tree(msgspec.to_builtins(decoded))  # every string, by its field's name
    return decoded


async def read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"JSON bodies are limited to {limit} bytes", details={"limit_bytes": limit}
        )
    data = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(
                f"JSON bodies are limited to {limit} bytes", details={"limit_bytes": limit}
            )
    return bytes(data)


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(
            f"Query parameter `{name}` must be an integer from {lo} to {hi}",
            details={"field": name},
        ) from None
    if not lo <= number <= hi:
        raise InvalidRequest(
            f"Query parameter `{name}` must be from {lo} to {hi}, got {number}",
            details={"field": name},
        )
    return number


def query_time(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        parsed = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidRequest(
            f"Query parameter `{name}` must be an RFC 3339 timestamp with offset, got {value!r}",
            details={"field": name},
        )
    return parsed


def query_tags(request: web.Request) -> tuple[list[str] | None, bool]:
    """``?tag=a&tag=b`` (any of them) and ``&tags_match=all`` (every one)."""
    tags = request.query.getall("tag", [])
    for tag in tags:
        if not TAG_PATTERN.fullmatch(tag):
            raise InvalidRequest(
                "Query parameter `tag` must be 1 to 64 of A-Z a-z 0-9 . _ : / - (a letter or"
                " digit first)",
                details={"field": "tag"},
            )
    match = request.query.get("tags_match") or "any"
    if match not in ("any", "all"):
        raise InvalidRequest(
            "Query parameter `tags_match` must be any or all", details={"field": "tags_match"}
        )
    return (tags or None), match == "all"


def decode_cursor(value: str, kind: type[T], field: str = "cursor") -> T:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return msgspec.json.decode(raw, type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequest(
            f"Query parameter `{field}` is not a cursor this API returned",
            details={"field": field},
        ) from None


class ListQuery(msgspec.Struct):
    """What every list route takes besides its filters: ``sort``, ``include_total``,
    ``limit`` and a cursor (which remembers the sort it was made for)."""

    newest_first: bool
    with_total: bool
    limit: int
    after: Any  # the decoded cursor's position, or None


def list_query(request: web.Request, position: Any) -> ListQuery:
    q = request.query
    sort = q.get("sort") or "-created_at"
    if sort not in ("created_at", "-created_at"):
        raise InvalidRequest(
            "Query parameter `sort` must be created_at (oldest first) or -created_at"
            " (newest first)",
            details={"field": "sort"},
        )
    total = q.get("include_total") or "false"
    if total not in ("true", "false"):
        raise InvalidRequest(
            "Query parameter `include_total` must be true or false",
            details={"field": "include_total"},
        )
    after = None
    if q.get("cursor"):
        cursor_sort, after = decode_cursor(q["cursor"], tuple[str, position])
        if cursor_sort != sort:
            raise InvalidRequest(
                f"This cursor pages a list sorted by {cursor_sort}, not {sort}",
                details={"field": "cursor"},
            )
    return ListQuery(
        newest_first=sort == "-created_at",
        with_total=total == "true",
        limit=query_int(request, "limit", 50, 1, 100),
        after=after,
    )


def page(
    rows: list[R], listing: ListQuery, position: Callable[[R], list[Any]]
) -> tuple[list[R], str | None]:
    """Rows fetched with ``limit + 1``: this page, and the cursor of the next (or None)."""
    if len(rows) <= listing.limit:
        return rows, None
    rows = rows[: listing.limit]
    sort = "-created_at" if listing.newest_first else "created_at"
    return rows, encode_cursor([sort, position(rows[-1])])
