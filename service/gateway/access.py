"""Who may call a route, declared where the route is defined: ``@public`` (anyone: health,
readiness, metrics, the OpenAPI and AsyncAPI documents) or ``@tenant`` (an API key's
tenant; the handler then reads ``middleware.principal``). The middleware asks a matched
route's handler, so a route that declares nothing is answered as ``tenant``: default-deny.
A test fails for any route without a declaration (tests/integration/test_access.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

PUBLIC = "public"
TENANT = "tenant"
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def public(handler: H) -> H:
    handler.access = PUBLIC  # type: ignore[attr-defined]
    return handler


def tenant(handler: H) -> H:
    handler.access = TENANT  # type: ignore[attr-defined]
    return handler


def declared(handler: object) -> str | None:
    """The handler's declaration, or None."""
    return getattr(handler, "access", None)
