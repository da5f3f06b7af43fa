"""The AsyncAPI 3.0 document of the AMQP contract (``GET /asyncapi.json``), generated from
the msgspec structs the messages are made with: run requests feedjobs receives, S3 object
events, dead letters, the status and ``feed.changed`` events it publishes, and the webhook
deliveries it sends. What OpenAPI is to HTTP clients, this is to the services that publish
to us directly (tests/integration/test_asyncapi.py validates it against the AsyncAPI
schema and holds the messages written to the structs)."""

from __future__ import annotations

from typing import Any

import msgspec

from service import __version__
from service.core import contracts as c
from service.core.s3_events import S3Event
from service.gateway.openapi import RAW_FIELDS

STRUCTS: list[Any] = [
    c.RunRequest,
    c.StatusEvent,
    c.FeedChangedEvent,
    c.JobHook,
    c.FeedChangedHook,
    c.WebhookTest,
    S3Event,
    c.ValidationResult,
    c.SubmissionResult,
    c.JobError,
]
# Which of RAW_FIELDS' structs (stored JSON passed through) appear here.
RAW_STRUCTS = {"StatusEvent"}
STR = {"type": "string"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _exchange(name: str, kind: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": name, "type": kind, "durable": True, "autoDelete": False},
            "bindingVersion": "0.3.0",
        }
    }


def _queue(name: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False},
            "bindingVersion": "0.3.0",
        }
    }


def _message(name: str, summary: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "summary": summary, "payload": payload, **extra}


WEBHOOK_HEADERS = {
    "type": "object",
    "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "properties": {
        "webhook-id": {**STR, "description": "msg_<32 hex>: the same on every retry"},
        "webhook-timestamp": {**STR, "description": "Unix seconds of this attempt"},
        "webhook-signature": {
            **STR,
            "description": "v1,<base64 HMAC-SHA256 of id.timestamp.body>; during a secret"
            " rotation's grace, two, space-separated",
        },
    },
}
DEAD_LETTER_HEADERS = {
    "type": "object",
    "required": ["x-error-code", "x-error-message", "x-original-routing-key"],
    "properties": {
        "x-error-code": {"enum": list(c.DEAD_LETTER_CODES)},
        "x-error-message": {**STR, "description": "Why, for a person"},
        "x-original-routing-key": STR,
    },
}


def _messages() -> dict[str, Any]:
    hook = {"headers": WEBHOOK_HEADERS, "contentType": "application/json"}
    return {
        "RunRequest": _message(
            "run", "Run a validation job (or a feed's): routing key `run`", _ref("RunRequest")
        ),
        "S3Event": _message(
            "s3.event",
            "An S3 or MinIO object event notification (any routing key)",
            _ref("S3Event"),
        ),
        "DeadLetter": _message(
            "dead.letter",
            "A refused message, as it came, with why in its headers",
            {"description": "The original message body, unchanged"},
            headers=DEAD_LETTER_HEADERS,
        ),
        "StatusEvent": _message(
            "job.status", "A job's status change: routing key `job.<status>`", _ref("StatusEvent")
        ),
        "FeedChanged": _message(
            "feed.changed",
            "What a run changed in its feed: routing key `feed.changed`",
            _ref("FeedChangedEvent"),
        ),
        "JobHook": _message(
            "job.webhook", "A `job.<status>` delivery (Standard Webhooks)", _ref("JobHook"), **hook
        ),
        "FeedChangedHook": _message(
            "feed.changed.webhook", "A `feed.changed` delivery", _ref("FeedChangedHook"), **hook
        ),
        "WebhookTest": _message(
            "webhook.test", "POST /webhooks/{id}/test's delivery", _ref("WebhookTest"), **hook
        ),
    }


def _channel(address: str | None, messages: list[str], description: str, **more: Any) -> Any:
    refs = {m: {"$ref": f"#/components/messages/{m}"} for m in messages}
    return {"address": address, "description": description, "messages": refs, **more}


CHANNELS: dict[str, Any] = {
    "runRequests": _channel(
        "jobs",
        ["RunRequest"],
        "Direct exchange `jobs`, routing key `run`; bound to the quorum queue `jobs.run`"
        " (x-delivery-limit 5, dead letters to `jobs.dlx`)",
        bindings=_exchange("jobs", "direct"),
    ),
    "s3Events": _channel(
        "s3.events",
        ["S3Event"],
        "Topic exchange `s3.events`, bound to the queue `jobs.s3events`",
        bindings=_exchange("s3.events", "topic"),
    ),
    "deadLetters": _channel(
        "jobs.run.dead",
        ["DeadLetter"],
        "Quorum queue on the fanout exchange `jobs.dlx`: refused messages, for people",
        bindings=_queue("jobs.run.dead"),
    ),
    "events": _channel(
        "jobs.events",
        ["StatusEvent", "FeedChanged"],
        "Topic exchange `jobs.events`: `job.<status>` and `feed.changed`, published from the"
        " outbox with publisher confirms, at least once",
        bindings=_exchange("jobs.events", "topic"),
    ),
    "webhooks": _channel(
        None,
        ["JobHook", "FeedChangedHook", "WebhookTest"],
        "POST to each webhook endpoint's URL (its address is the endpoint's own)",
        bindings={"http": {"method": "POST", "bindingVersion": "0.3.0"}},
    ),
}


def _operation(action: str, channel: str, summary: str) -> dict[str, Any]:
    messages = [
        {"$ref": f"#/channels/{channel}/messages/{m}"} for m in CHANNELS[channel]["messages"]
    ]
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": messages,
    }


OPERATIONS = {
    "receiveRunRequest": _operation("receive", "runRequests", "Consumers run what is asked"),
    "receiveS3Event": _operation("receive", "s3Events", "Watched feeds load new objects"),
    "sendDeadLetter": _operation("send", "deadLetters", "A message that cannot succeed"),
    "sendEvent": _operation("send", "events", "Status changes and feed changes"),
    "sendWebhook": _operation("send", "webhooks", "Deliveries, retried for about 3 days"),
}


def build() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(STRUCTS, ref_template="#/components/schemas/{name}")
    for (struct, field), schema in RAW_FIELDS.items():
        if struct in RAW_STRUCTS:
            schemas[struct]["properties"][field] = schema
    data = schemas["JobHookData"]["properties"]
    data["result"] = RAW_FIELDS[("StatusEvent", "result")]
    data["error"] = RAW_FIELDS[("StatusEvent", "error")]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "feedjobs messaging",
            "version": __version__,
            "description": "Run requests feedjobs takes over RabbitMQ, the events it"
            " publishes and the webhooks it sends. Every AMQP name is prefixed by"
            " AMQP_PREFIX. See docs/messaging.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "AMQP_URL",
            }
        },
        "channels": CHANNELS,
        "operations": OPERATIONS,
        "components": {"messages": _messages(), "schemas": schemas},
    }
