"""The OpenAPI 3.1 document, generated from the msgspec structs of the bodies.

Every route declares its parameters, headers, request bodies and every status it can
answer, so that a generated client can use the whole API (tests/integration/test_openapi.py
validates the document, and runs schemathesis against the live app). Job documents are
passed through from PostgreSQL as raw JSON for speed (``msgspec.Raw``); their schemas are
named here, in ``RAW_FIELDS``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service import __version__
from service.core import contracts as c

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
]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(*names: str) -> dict[str, Any]:
    return {"anyOf": [*(_ref(n) for n in names), {"type": "null"}]}


# Fields encoded from stored JSON text (msgspec.Raw): what that text always is.
RAW_FIELDS: dict[tuple[str, str], dict[str, Any]] = {
    ("JobView", "progress"): _nullable("Progress"),
    ("JobView", "result"): _nullable("ValidationResult", "SubmissionResult"),
    ("JobView", "error"): _nullable("JobError"),
    ("RunView", "options"): _ref("EffectiveOptions"),
    ("RunView", "result"): _nullable("ValidationResult"),
    ("RunView", "error"): _nullable("JobError"),
    ("StatusEvent", "result"): _nullable("ValidationResult", "SubmissionResult"),
    ("StatusEvent", "error"): _nullable("JobError"),
}

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


def _headers(*names: str) -> dict[str, Any]:
    return {n: {"$ref": f"#/components/headers/{n}"} for n in names}


def _json(schema: dict[str, Any], description: str, *headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        out["headers"] = _headers(*headers)
    return out


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        s: _json(_ref("ErrorBody"), ERROR_TEXT[s], "x-request-id", "Retry-After") for s in statuses
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, example: str, pattern: str) -> dict[str, Any]:
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
    _query("sort", {"enum": ["created_at", "-created_at"]}, "Oldest or newest first (default)"),
    _query("include_total", {"enum": ["true", "false"]}, "Add `total`, every match"),
]
TAG_QUERY = [
    _query(
        "tag", {"type": "string", "pattern": c.TAG}, "Feeds with this tag (repeat: any of them)"
    ),
    _query("tags_match", {"enum": ["any", "all"], "default": "any"}, "all: every tag given"),
]
WAIT = _query("wait", {"type": "integer", "minimum": 0, "maximum": 60}, "Long poll, seconds")
CURSOR = _query("cursor", STR, "next_cursor of the previous page")


def _limit(hi: int, default: int) -> dict[str, Any]:
    return _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": hi, "default": default}, "Page size"
    )


def _upload_body(description: str) -> dict[str, Any]:
    content: dict[str, Any] = {t: {"schema": STR} for t in CSV_TYPES}
    content.update({t: {"schema": BINARY} for t in BINARY_TYPES})
    return {"required": True, "description": description, "content": content}


UPLOAD_QUERY = [
    _query("name", {"type": "string", "maxLength": 200}, "The feed's name"),
    _query("mode", {"enum": ["upsert", "snapshot"]}, "Default load mode"),
    _query("delimiter", {"enum": [",", ";", "|", "tab"]}, "The CSV delimiter"),
    _query("max_rejected_rows", INT32, "Default limit of rejected rows"),
    _query(
        "max_deleted_ratio",
        {"type": "number", "minimum": 0, "maximum": 1, "default": c.DEFAULT_MAX_DELETED_RATIO},
        "Share of live products a snapshot may delete (TOO_MANY_DELETIONS beyond)",
    ),
    _query(
        "encoding",
        {"enum": list(c.ENCODINGS), "default": "utf-8"},
        "The files' text encoding (auto: BOM, strict UTF-8, else a detector)",
    ),
    _query(
        "columns",
        {"type": "string", "contentMediaType": "application/json"},
        'The header mapping as a JSON object, {"their header": "our column"}',
    ),
    _query("tags", STR, "Comma-separated tags (at most 20)"),
    _query("description", {"type": "string", "maxLength": c.MAX_DESCRIPTION}, "What the feed is"),
    _query(
        "unknown_columns",
        {"enum": list(c.UNKNOWN_POLICIES), "default": "keep"},
        "Columns that map to no product column: kept as attributes, ignored, or rejected",
    ),
]
PROTECTED = ("401", "429", "503")


WEBHOOK_ID = r"^WH[0-9]{5,18}$"


def _webhook_paths(rate: tuple[str, ...]) -> dict[str, Any]:
    hook = _path("webhook_id", "WH00001", WEBHOOK_ID)
    delivery = _path("delivery_id", "msg_0123456789abcdef0123456789abcdef", r"^msg_[0-9a-f]{32}$")
    not_found = _errors("404", *PROTECTED)
    return {
        "/webhooks": {
            "get": {
                "operationId": "list_webhooks",
                "summary": "The tenant's webhook endpoints",
                "responses": {
                    "200": _json(_ref("WebhookList"), "Endpoints", *rate),
                    **_errors(*PROTECTED),
                },
            },
            "post": {
                "operationId": "create_webhook",
                "summary": "Register an endpoint; its signing secret is shown once",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CreateWebhook")}},
                },
                "responses": {
                    "201": _json(_ref("WebhookCreated"), "Registered", "Location", *rate),
                    **_errors("400", "413", "415", *PROTECTED),
                },
            },
        },
        "/webhooks/{webhook_id}": {
            "get": {
                "operationId": "get_webhook",
                "summary": "An endpoint (disabled_reason says why it was disabled)",
                "parameters": [hook],
                "responses": {
                    "200": _json(_ref("WebhookView"), "The endpoint", *rate),
                    **not_found,
                },
            },
            "delete": {
                "operationId": "delete_webhook",
                "summary": "Remove an endpoint and its deliveries",
                "parameters": [hook],
                "responses": {
                    "204": {"description": "Removed", "headers": _headers(*rate)},
                    **not_found,
                },
            },
        },
        "/webhooks/{webhook_id}/rotate-secret": {
            "post": {
                "operationId": "rotate_webhook_secret",
                "summary": "A new secret; the old one still signs for WEBHOOK_SECRET_GRACE_SECONDS",
                "parameters": [hook],
                "responses": {"200": _json(_ref("SecretRotated"), "Rotated", *rate), **not_found},
            }
        },
        "/webhooks/{webhook_id}/test": {
            "post": {
                "operationId": "test_webhook",
                "summary": "Send a webhook.test delivery",
                "parameters": [hook],
                "responses": {"202": _json(_ref("DeliveryQueued"), "Queued", *rate), **not_found},
            }
        },
        "/webhooks/{webhook_id}/deliveries": {
            "get": {
                "operationId": "list_deliveries",
                "summary": "The endpoint's deliveries, newest first",
                "parameters": [hook, _limit(100, 50), CURSOR],
                "responses": {
                    "200": _json(_ref("DeliveryList"), "A page of deliveries", *rate),
                    **_errors("400", "404", *PROTECTED),
                },
            }
        },
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": {
            "post": {
                "operationId": "retry_delivery",
                "summary": "Send a delivery again now (enables a disabled endpoint)",
                "parameters": [hook, delivery],
                "responses": {"202": _json(_ref("DeliveryQueued"), "Queued", *rate), **not_found},
            }
        },
    }


def _paths() -> dict[str, Any]:
    job_id, feed_id = _path("job_id", "JV00001", JOB_ID), _path("feed_id", "FD00001", FEED_ID)
    validation_job_id = _path("job_id", "JV00001", VALIDATION_JOB_ID)
    rate = ("x-request-id", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
    job_200 = _json(_ref("JobView"), "The job", "ETag", "Retry-After", *rate)
    created = _json(_ref("FeedCreated"), "Stored: the feed and its jobs", "Location", *rate)
    return {
        "/jobs": {
            "get": {
                "operationId": "list_jobs",
                "summary": "List jobs, newest first",
                "parameters": [
                    _query("status", STR, "Comma-separated statuses"),
                    _query("job_type", {"enum": ["submission", "validation"]}, "Job type"),
                    _query("feed_id", STR, "Only this feed's jobs"),
                    _query("created_after", {"type": "string", "format": "date-time"}, "After"),
                    _query("created_before", {"type": "string", "format": "date-time"}, "Before"),
                    *TAG_QUERY,
                    _limit(100, 50),
                    CURSOR,
                    *LIST_QUERY,
                ],
                "responses": {
                    "200": _json(_ref("JobList"), "A page of jobs", *rate),
                    **_errors("400", *PROTECTED),
                },
            }
        },
        "/jobs/{job_id}": {
            "get": {
                "operationId": "get_job",
                "summary": "Read a job; If-None-Match → 304; ?wait long-polls for a change",
                "parameters": [
                    job_id,
                    WAIT,
                    {"name": "If-None-Match", "in": "header", "required": False, "schema": STR},
                ],
                "responses": {
                    "200": job_200,
                    "304": {"description": "Not modified", "headers": _headers("ETag", *rate)},
                    **_errors("400", "404", *PROTECTED),
                },
            }
        },
        "/jobs/{job_id}/run": {
            "post": {
                "operationId": "run_job",
                "summary": "Queue a run of a validation job (?wait: until it ends)",
                "parameters": [
                    validation_job_id,
                    WAIT,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    },
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("RunOptions")}},
                },
                "responses": {
                    "202": _json(_ref("RunAccepted"), "Queued", "Location", "Retry-After", *rate),
                    "200": _json(_ref("JobView"), "The job once it ended (?wait)", *rate),
                    **_errors("400", "404", "409", "413", "415", "422", *PROTECTED),
                },
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "operationId": "cancel_job",
                "summary": "Cancel a queued or running job",
                "parameters": [job_id],
                "responses": {
                    "202": _json(_ref("JobView"), "Cancelled or cancelling", "ETag", *rate),
                    **_errors("404", "409", *PROTECTED),
                },
            }
        },
        "/jobs/{job_id}/runs": {
            "get": {
                "operationId": "list_runs",
                "summary": "Every run of a job, newest first",
                "parameters": [job_id],
                "responses": {
                    "200": _json(_ref("RunList"), "Runs", *rate),
                    **_errors("404", *PROTECTED),
                },
            }
        },
        "/jobs/{job_id}/errors": {
            "get": {
                "operationId": "list_rejections",
                "summary": "Rows rejected by the latest run, in file order (all of them as CSV"
                " with Accept: text/csv)",
                "parameters": [job_id, _limit(1000, 100), CURSOR],
                "responses": {
                    "200": {
                        "description": "A page of rejections, or (text/csv) all of them",
                        "headers": _headers(*rate),
                        "content": {
                            "application/json": {"schema": _ref("ErrorList")},
                            "text/csv": {"schema": STR},
                        },
                    },
                    **_errors("400", "404", *PROTECTED),
                },
            }
        },
        "/feeds": {
            "get": {
                "operationId": "list_feeds",
                "summary": "The tenant's feeds, newest first",
                "parameters": [
                    _query("status", {"enum": list(c.FEED_STATUSES)}, "Only feeds in it"),
                    *TAG_QUERY,
                    _limit(100, 50),
                    CURSOR,
                    *LIST_QUERY,
                ],
                "responses": {
                    "200": _json(_ref("FeedList"), "A page of feeds", *rate),
                    **_errors("400", *PROTECTED),
                },
            },
            "post": {
                "operationId": "create_feed",
                "summary": "Upload a CSV (streamed to S3), or register an S3 object (JSON)",
                "parameters": UPLOAD_QUERY,
                "requestBody": {
                    **_upload_body("The CSV (Content-Encoding: gzip allowed), or RegisterFeed"),
                    "content": {
                        **_upload_body("")["content"],
                        "application/json": {"schema": _ref("RegisterFeed")},
                    },
                },
                "responses": {
                    "201": created,
                    **_errors("400", "408", "413", "415", *PROTECTED),
                },
            },
        },
        "/feeds/{feed_id}": {
            "get": {
                "operationId": "get_feed",
                "summary": "Read a feed",
                "parameters": [feed_id],
                "responses": {
                    "200": _json(_ref("FeedView"), "The feed", *rate),
                    **_errors("404", *PROTECTED),
                },
            },
            "patch": {
                "operationId": "update_feed",
                "summary": "Set a feed's name, description or tags (the fields given)",
                "parameters": [feed_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("UpdateFeed")}},
                },
                "responses": {
                    "200": _json(_ref("FeedView"), "The feed", *rate),
                    **_errors("400", "404", "413", "415", *PROTECTED),
                },
            },
        },
        **_webhook_paths(rate),
        "/feeds/{feed_id}/products": {
            "get": {
                "operationId": "list_products",
                "summary": "The feed's products in sku order, cleaned, with their attributes",
                "parameters": [
                    feed_id,
                    _query("sku", STR, "Only this sku"),
                    _query(
                        "changed_since",
                        {"type": "string", "format": "date-time"},
                        "Only products whose last change (or deletion) is at or after it",
                    ),
                    _query(
                        "include_deleted",
                        {"enum": ["true", "false"], "default": "false"},
                        "Deleted products too (deleted_at set)",
                    ),
                    _limit(1000, 100),
                    CURSOR,
                ],
                "responses": {
                    "200": _json(_ref("ProductList"), "A page of products", *rate),
                    **_errors("400", "404", *PROTECTED),
                },
            }
        },
        "/feeds/{feed_id}/products/{sku}": {
            "get": {
                "operationId": "get_product",
                "summary": "One product of the feed, deleted or not",
                "parameters": [feed_id, _path("sku", "SKU-1", r"^[A-Za-z0-9._/-]{1,64}$")],
                "responses": {
                    "200": _json(_ref("Product"), "The product", *rate),
                    **_errors("404", *PROTECTED),
                },
            }
        },
        "/feeds/{feed_id}/file": {
            "put": {
                "operationId": "replace_file",
                "summary": "A new version of an uploaded feed's file",
                "parameters": [feed_id],
                "requestBody": _upload_body("The CSV (Content-Encoding: gzip allowed)"),
                "responses": {
                    "201": created,
                    **_errors("400", "404", "408", "413", "415", *PROTECTED),
                },
            }
        },
        "/feeds/{feed_id}/schedule": {
            "put": {
                "operationId": "put_schedule",
                "summary": "Run the feed on a cron expression (in a time zone) or every N seconds",
                "parameters": [feed_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ScheduleBody")}},
                },
                "responses": {
                    "200": _json(_ref("ScheduleView"), "The schedule, with next_run_at", *rate),
                    **_errors("400", "404", "413", "415", *PROTECTED),
                },
            },
            "delete": {
                "operationId": "delete_schedule",
                "summary": "Stop running the feed on a schedule",
                "parameters": [feed_id],
                "responses": {
                    "204": {"description": "Removed", "headers": _headers(*rate)},
                    **_errors("404", *PROTECTED),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Alive",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "Alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Ready: PostgreSQL, RabbitMQ and LISTEN are up",
                "security": [],
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready"),
                    "503": _json(_ref("Readiness"), "Not ready: `checks` says what is down"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": STR}}}
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }


EXTRA_SCHEMAS: dict[str, Any] = {
    "Health": {
        "type": "object",
        "properties": {"status": {"const": "ok"}, "version": STR},
        "required": ["status", "version"],
    },
    "Readiness": {
        "type": "object",
        "properties": {
            "status": {"enum": ["ready", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": STR},
        },
        "required": ["status", "checks"],
    },
}


def build() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        BODIES, ref_template="#/components/schemas/{name}"
    )
    for (struct, field), schema in RAW_FIELDS.items():
        components[struct]["properties"][field] = schema
    components["RegisterFeed"]["properties"]["s3_uri"]["pattern"] = S3_URI
    components["ScheduleBody"]["oneOf"] = SCHEDULE_ONE_OF
    components.update(EXTRA_SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "feedjobs",
            "version": __version__,
            "description": "Loads product feeds (CSV in S3) into PostgreSQL. See docs/api.md.",
        },
        "security": [{"apiKey": []}],
        "paths": _paths(),
        "components": {
            "schemas": components,
            "headers": HEADERS,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }
