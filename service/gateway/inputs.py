"""What every request's inputs must be, whatever the route: each query parameter given once
and not empty (``?wait=`` or ``?status=a&status=b`` is a 400, not a silent default or a
silent pick), and no text that PostgreSQL cannot store: a NUL character (``text`` never
holds one). Checked at the API for every query parameter, path segment and JSON string (keys
included), so the answer is a 400 naming the field, never a 500 from the database driver.
The other text PostgreSQL refuses cannot reach us: a lone surrogate is malformed JSON to
msgspec (400), invalid UTF-8 in a URL decodes to U+FFFD, and aiohttp's parser refuses
control characters in headers."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from service.core.errors import InvalidRequest

_FORBIDDEN = re.compile("\x00")


def check(value: str, field: str) -> None:
    found = _FORBIDDEN.search(value)
    if found is not None:
        raise InvalidRequest(
            f"`{field}` holds a NUL character (at position {found.start()}), which cannot be"
            " stored",
            details={"field": field},
        )


# Query parameters a client may give more than once (?tag=a&tag=b).
REPEATABLE = frozenset({"tag"})


def check_request(request: web.Request) -> None:
    """The query string and the path's parameters."""
    seen: set[str] = set()
    for name, value in request.query.items():
        check(name, name)
        check(value, name)
        if name in seen and name not in REPEATABLE:
            raise InvalidRequest(
                f"Query parameter `{name}` is given more than once", details={"field": name}
            )
        seen.add(name)
        if value == "":
            raise InvalidRequest(
                f"Query parameter `{name}` is empty: give it a value or leave it out",
                details={"field": name},
            )
    for name, value in request.match_info.items():
        check(value, name)


def check_tree(value: Any, field: str = "") -> None:
    """Every string of a decoded JSON body (as builtins), named by its path (``tags[2]``)."""
    if isinstance(value, str):
        check(value, field or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{field}.{key}" if field else str(key)
            check(str(key), path)
            check_tree(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_tree(item, f"{field}[{i}]")
