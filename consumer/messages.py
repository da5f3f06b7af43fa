"""Run-request messages: decoding (a bad one is dead-lettered with a code and a reason),
settling, and the dead-letter exchange.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from consumer.metrics import ConsumerMetrics
from service.core.bus import copy_message
from service.core.contracts import DeadLetterCode, RunRequest
from service.core.ids import is_correlation_id
from service.core.logs import get_logger

log = get_logger(__name__)
MAX_MESSAGE_BYTES = 64 * 1024  # a run request is a few hundred bytes


class DeadLetter(Exception):
    def __init__(self, code: DeadLetterCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Stopping(Exception):
    """The consumer is shutting down: hand the message back to the broker."""


def decode_request(body: bytes) -> RunRequest:
    if len(body) > MAX_MESSAGE_BYTES:
        raise DeadLetter(
            "MESSAGE_TOO_LARGE",
            f"The run request is {len(body)} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
        )
    try:
        req = msgspec.json.decode(body, type=RunRequest)
    except msgspec.ValidationError as exc:
        if _too_deep(body):  # the schema fails first, on the outermost value
            raise DeadLetter("INVALID_JSON", "The run request is nested too deeply") from None
        raise DeadLetter(
            "INVALID_MESSAGE", f"The run request does not fit the schema: {exc}"
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DeadLetter("INVALID_JSON", f"The run request is not valid JSON: {exc}") from None
    except RecursionError:
        raise DeadLetter("INVALID_JSON", "The run request is nested too deeply") from None
    if req.job_id is None and req.feed_id is None:
        raise DeadLetter("INVALID_MESSAGE", "The run request names neither job_id nor feed_id")
    return req


def _too_deep(body: bytes) -> bool:
    """Whether ``body`` nests deeper than a JSON decoder goes (only asked of a message that
    failed the schema: it costs nothing on the way of a valid one)."""
    try:
        msgspec.json.decode(body)
    except RecursionError:
        return True
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    return False


def correlation_id(message: AbstractIncomingMessage) -> str | None:
    """What an upstream request without a request_id is known by in the logs."""
    for candidate in (message.correlation_id, message.message_id):
        if is_correlation_id(candidate):
            return candidate
    return None


async def settle_quietly(op: Any, message: AbstractIncomingMessage, what: str) -> None:
    """Ack or nack; if the channel is gone the broker redelivers, which is harmless."""
    try:
        await op
    except Exception as exc:
        log.warning(
            "message_settle_failed", op=what, message_id=message.message_id, error=repr(exc)
        )


async def dead_letter(
    dlx: AbstractExchange | None,
    message: AbstractIncomingMessage,
    exc: DeadLetter,
    metrics: ConsumerMetrics,
) -> None:
    """Copy the message to the dead-letter exchange with its code and reason, then ack it;
    with no session to publish on, leave it unacked (the broker redelivers it later)."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers.update(
        {
            "x-error-code": exc.code,
            "x-error-message": exc.message[:1000],
            "x-original-routing-key": message.routing_key or "",
        }
    )
    try:
        if dlx is None:
            raise ConnectionError("no AMQP session")
        await dlx.publish(copy_message(message, headers), routing_key="")
    except Exception as publish_error:
        log.warning("dead_letter_failed", message_id=message.message_id, error=repr(publish_error))
        return
    await settle_quietly(message.ack(), message, "ack")
    metrics.dead_letters.labels(exc.code).inc()
    log.warning(
        "message_dead_lettered",
        code=exc.code,
        reason=exc.message[:1000],
        message_id=message.message_id,
    )
