"""The OpenAPI 3.1 document, generated from the msgspec structs of the bodies and the entry
each route declares where it is defined (``@d.doc`` of ``service.gateway.apidoc``).

Every route declares its parameters, headers, request bodies and every status it can
answer, so that a generated client can use the whole API (tests/integration/test_openapi.py
validates the document, and runs schemathesis against the live app). Job documents are
passed through from PostgreSQL as raw JSON for speed (``msgspec.Raw``); their schemas are
named here, in ``RAW_FIELDS``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from service import __version__
from service.core import contracts as c
from service.gateway import apidoc as d

BODIES: list[Any] = [
    c.ErrorBody,
    c.JobView,
    c.JobList,
    c.RunAccepted,
    c.RunOptions,
    c.EffectiveOptions,
    c.RunList,
    c.ErrorList,
    c.RegisterFeed,
    c.FeedCreated,
    c.FeedView,
    c.FeedList,
    c.ScheduleBody,
    c.ScheduleView,
    c.ValidationResult,
    c.SubmissionResult,
    c.JobError,
    c.Progress,
    c.RunRequest,
    c.StatusEvent,
    c.Product,
    c.ProductList,
    c.UpdateFeed,
    c.CreateWebhook,
    c.WebhookView,
    c.WebhookCreated,
    c.WebhookList,
    c.SecretRotated,
    c.DeliveryView,
    c.DeliveryList,
    c.DeliveryQueued,
    c.RunChangeList,
    c.FeedChangeList,
]


# Fields encoded from stored JSON text (msgspec.Raw): what that text always is.
RAW_FIELDS: dict[tuple[str, str], dict[str, Any]] = {
    ("JobView", "progress"): d.nullable("Progress"),
    ("JobView", "result"): d.nullable("ValidationResult", "SubmissionResult"),
    ("JobView", "error"): d.nullable("JobError"),
    ("RunView", "options"): d.ref("EffectiveOptions"),
    ("RunView", "result"): d.nullable("ValidationResult"),
    ("RunView", "error"): d.nullable("JobError"),
    ("StatusEvent", "result"): d.nullable("ValidationResult", "SubmissionResult"),
    ("StatusEvent", "error"): d.nullable("JobError"),
}


EXTRA_SCHEMAS: dict[str, Any] = {
    "Health": {
        "type": "object",
        "properties": {"status": {"const": "ok"}, "version": d.STR},
        "required": ["status", "version"],
    },
    "Readiness": {
        "type": "object",
        "properties": {
            # read-only: the primary is down and the standby (DATABASE_READ_URL) answers reads
            "status": {"enum": ["ready", "read-only", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": d.STR},
        },
        "required": ["status", "checks"],
    },
}


def paths() -> dict[str, Any]:
    """Every route's entry, by path and method; a route without one is a bug (KeyError)."""
    from service.gateway.app import route_tables  # the routes import this module

    out: dict[str, Any] = {}
    for table in route_tables():
        for route in table:
            if not isinstance(route, web.RouteDef):
                continue
            entry = d.declared(route.handler)
            if entry is None:
                raise KeyError(f"{route.method} {route.path} declares no OpenAPI entry (@doc)")
            path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.path)
            out.setdefault(path, {})[route.method.lower()] = entry
    return out


def build() -> dict[str, Any]:
    """The document, each route's entry taken from its handler's ``@doc``."""
    _, components = msgspec.json.schema_components(
        BODIES, ref_template="#/components/schemas/{name}"
    )
    for (struct, field), schema in RAW_FIELDS.items():
        components[struct]["properties"][field] = schema
    components["RegisterFeed"]["properties"]["s3_uri"]["pattern"] = d.S3_URI
    components["ScheduleBody"]["oneOf"] = d.SCHEDULE_ONE_OF
    components.update(EXTRA_SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "feedjobs",
            "version": __version__,
            "description": "Loads product feeds (CSV in S3) into PostgreSQL. See docs/api.md.",
        },
        "security": [{"apiKey": []}],
        "paths": paths(),
        "components": {
            "schemas": components,
            "headers": d.HEADERS,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }
