"""The OpenAPI pieces each route declares its entry with, where it is defined:
``@doc({...})`` under its ``@routes.<method>`` and access decorators. ``openapi.build``
collects them from the app's routes; a route without one fails the document (and the
suite: tests/integration/test_openapi.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from service.core import contracts as c

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def doc(operation: dict[str, Any]) -> Callable[[H], H]:
    """The route's OpenAPI operation object."""

    def declare(handler: H) -> H:
        handler.openapi = operation  # type: ignore[attr-defined]
        return handler

    return declare


def declared(handler: object) -> dict[str, Any] | None:
    return getattr(handler, "openapi", None)


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(*names: str) -> dict[str, Any]:
    return {"anyOf": [*(ref(n) for n in names), {"type": "null"}]}


STR = {"type": "string"}
INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
BINARY = {"type": "string", "format": "binary"}
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
BINARY_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream")

ERROR_TEXT = {
    "400": "Invalid request: `details.field` names what is wrong",
    "401": "Missing or unknown API key",
    "404": "No such job or feed (or another tenant's)",
    "405": "Method not allowed (see the Allow header)",
    "408": "The upload stopped arriving",
    "409": "Conflict with the job's or feed's state",
    "410": "Gone: deleted by retention (RETENTION_DAYS)",
    "413": "Body too large",
    "415": "Content-Type not accepted",
    "422": "Idempotency-Key reused for another request",
    "429": "Rate limited (see Retry-After)",
    "503": "PostgreSQL unreachable (see Retry-After)",
}
HEADERS = {
    "ETag": {"description": "The job's version", "schema": STR},
    "Retry-After": {"description": "Seconds until asking again is worthwhile", "schema": STR},
    "Location": {"description": "Where the resource is", "schema": STR},
    "RateLimit-Limit": {"description": "The key's burst", "schema": STR},
    "RateLimit-Remaining": {"description": "Requests left in the bucket", "schema": STR},
    "RateLimit-Reset": {"description": "Seconds until a request is allowed", "schema": STR},
    "x-request-id": {"description": "The request's id, also in every log line", "schema": STR},
}


def headers(*names: str) -> dict[str, Any]:
    return {n: {"$ref": f"#/components/headers/{n}"} for n in names}


def ok(schema: dict[str, Any], description: str, *names: str) -> dict[str, Any]:
    """A JSON response, with these headers."""
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if names:
        out["headers"] = headers(*names)
    return out


def errors(*statuses: str) -> dict[str, Any]:
    return {s: ok(ref("ErrorBody"), ERROR_TEXT[s], "x-request-id", "Retry-After") for s in statuses}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def path(name: str, example: str, pattern: str) -> dict[str, Any]:
    schema = {"type": "string", "pattern": pattern}
    return {"name": name, "in": "path", "required": True, "schema": schema, "example": example}


# The ids a path takes (service/core/ids.py); /run and /cancel take validation jobs only.
JOB_ID = r"^J[SV][0-9]{5,18}$"
VALIDATION_JOB_ID = r"^JV[0-9]{5,18}$"
FEED_ID = r"^FD[0-9]{5,18}$"
S3_URI = r"^s3://[^/]+/.+"
# PUT /feeds/{id}/schedule takes a cron expression or an interval, exactly one.
SCHEDULE_ONE_OF = [
    {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
    {"required": ["every_seconds"], "properties": {"every_seconds": {"type": "integer"}}},
]


LIST_QUERY = [
    query("sort", {"enum": ["created_at", "-created_at"]}, "Oldest or newest first (default)"),
    query("include_total", {"enum": ["true", "false"]}, "Add `total`, every match"),
]
TAG_QUERY = [
    query("tag", {"type": "string", "pattern": c.TAG}, "Feeds with this tag (repeat: any of them)"),
    query("tags_match", {"enum": ["any", "all"], "default": "any"}, "all: every tag given"),
]
WAIT = query("wait", {"type": "integer", "minimum": 0, "maximum": 60}, "Long poll, seconds")
CURSOR = query("cursor", STR, "next_cursor of the previous page")


def limit(hi: int, default: int) -> dict[str, Any]:
    return query(
        "limit", {"type": "integer", "minimum": 1, "maximum": hi, "default": default}, "Page size"
    )


def upload_body(description: str) -> dict[str, Any]:
    content: dict[str, Any] = {t: {"schema": STR} for t in CSV_TYPES}
    content.update({t: {"schema": BINARY} for t in BINARY_TYPES})
    return {"required": True, "description": description, "content": content}


UPLOAD_QUERY = [
    query("name", {"type": "string", "maxLength": 200}, "The feed's name"),
    query("mode", {"enum": ["upsert", "snapshot"]}, "Default load mode"),
    query("delimiter", {"enum": [",", ";", "|", "tab"]}, "The CSV delimiter"),
    query("max_rejected_rows", INT32, "Default limit of rejected rows"),
    query(
        "max_deleted_ratio",
        {"type": "number", "minimum": 0, "maximum": 1, "default": c.DEFAULT_MAX_DELETED_RATIO},
        "Share of live products a snapshot may delete (TOO_MANY_DELETIONS beyond)",
    ),
    query(
        "encoding",
        {"enum": list(c.ENCODINGS), "default": "utf-8"},
        "The files' text encoding (auto: BOM, strict UTF-8, else a detector)",
    ),
    query(
        "columns",
        {"type": "string", "contentMediaType": "application/json"},
        'The header mapping as a JSON object, {"their header": "our column"}',
    ),
    query("tags", STR, "Comma-separated tags (at most 20)"),
    query("description", {"type": "string", "maxLength": c.MAX_DESCRIPTION}, "What the feed is"),
    query(
        "unknown_columns",
        {"enum": list(c.UNKNOWN_POLICIES), "default": "keep"},
        "Columns that map to no product column: kept as attributes, ignored, or rejected",
    ),
]
PROTECTED = ("401", "429", "503")


WEBHOOK_ID = r"^WH[0-9]{5,18}$"


RATE = ("x-request-id", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
JOB = path("job_id", "JV00001", JOB_ID)
FEED = path("feed_id", "FD00001", FEED_ID)
VALIDATION_JOB = path("job_id", "JV00001", VALIDATION_JOB_ID)
JOB_200 = ok(ref("JobView"), "The job", "ETag", "Retry-After", *RATE)
CREATED = ok(ref("FeedCreated"), "Stored: the feed and its jobs", "Location", *RATE)
WEBHOOK = path("webhook_id", "WH00001", WEBHOOK_ID)
DELIVERY = path("delivery_id", "msg_0123456789abcdef0123456789abcdef", r"^msg_[0-9a-f]{32}$")
NOT_FOUND = errors("404", *PROTECTED)
