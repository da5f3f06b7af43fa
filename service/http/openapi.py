"""The OpenAPI 3.1 document, generated from the msgspec structs of the bodies."""

from __future__ import annotations

from typing import Any

import msgspec

from service import contracts as c

BODIES: list[Any] = [
    c.ErrorBody,
    c.JobView,
    c.JobList,
    c.RunAccepted,
    c.RunOptions,
    c.RunList,
    c.ErrorList,
    c.RegisterFeed,
    c.FeedCreated,
    c.FeedView,
    c.ValidationResult,
    c.SubmissionResult,
    c.JobError,
    c.Progress,
    c.RunRequest,
    c.StatusEvent,
]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def build() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        BODIES, ref_template="#/components/schemas/{name}"
    )
    err = _json("ErrorBody", "Error")
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    feed_id = {"name": "feed_id", "in": "path", "required": True, "schema": {"type": "string"}}
    wait = {
        "name": "wait",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": 60},
    }
    auth: list[dict[str, list[str]]] = [{"apiKey": []}]
    paths: dict[str, Any] = {
        "/jobs/{job_id}": {
            "get": {
                "summary": "Read a job (ETag, long poll with ?wait)",
                "parameters": [job_id, wait],
                "security": auth,
                "responses": {
                    "200": _json("JobView", "The job"),
                    "304": {"description": "Not modified"},
                    "404": err,
                },
            }
        },
        "/jobs": {
            "get": {
                "summary": "List jobs, newest first",
                "security": auth,
                "responses": {"200": _json("JobList", "A page of jobs"), "400": err},
            }
        },
        "/jobs/{job_id}/run": {
            "post": {
                "summary": "Run a validation job",
                "parameters": [job_id, wait],
                "security": auth,
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("RunOptions")}},
                },
                "responses": {
                    "202": _json("RunAccepted", "Queued"),
                    "200": _json("JobView", "Waited"),
                    "400": err,
                    "404": err,
                    "409": err,
                    "422": err,
                },
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or running job",
                "parameters": [job_id],
                "security": auth,
                "responses": {"202": _json("JobView", "Cancelling"), "409": err},
            }
        },
        "/jobs/{job_id}/runs": {
            "get": {
                "summary": "Every run of a job",
                "parameters": [job_id],
                "security": auth,
                "responses": {"200": _json("RunList", "Runs")},
            }
        },
        "/jobs/{job_id}/errors": {
            "get": {
                "summary": "Rejected rows of the latest run",
                "parameters": [job_id],
                "security": auth,
                "responses": {"200": _json("ErrorList", "Rows")},
            }
        },
        "/feeds": {
            "post": {
                "summary": "Upload (text/csv) or register (JSON) a feed",
                "security": auth,
                "requestBody": {
                    "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/json": {"schema": _ref("RegisterFeed")},
                    }
                },
                "responses": {
                    "201": _json("FeedCreated", "Created"),
                    "400": err,
                    "413": err,
                    "415": err,
                },
            }
        },
        "/feeds/{feed_id}/file": {
            "put": {
                "summary": "A new version of an uploaded feed's file",
                "parameters": [feed_id],
                "security": auth,
                "responses": {"201": _json("FeedCreated", "Stored")},
            }
        },
        "/feeds/{feed_id}": {
            "get": {
                "summary": "Read a feed",
                "parameters": [feed_id],
                "security": auth,
                "responses": {"200": _json("FeedView", "The feed"), "404": err},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "feedjobs", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }
