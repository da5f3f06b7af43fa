"""structlog set-up: one JSON object per line on stdout (or console rendering for humans)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from service.core.settings import Settings

# msgspec writes the JSON line (several times faster than json.dumps: one line per request);
# anything it cannot encode is written as its repr.
_JSON = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event: dict[str, Any], **_: Any) -> bytes:
    return _JSON.encode(event)


class AccessLog:
    """The gateway's one line per request, written straight to stdout.

    It is the same JSON object structlog would write (event, the request's fields and ids,
    level, logger, ts), built without structlog's processor chain: at thousands of polls a
    second the chain cost a quarter of the gateway's time. Only with the JSON format at
    INFO or below; otherwise (console format, tests) lines go through structlog as usual."""

    FLUSH_AFTER = 0.05  # seconds a line may wait in the buffer, so lines reach ops promptly

    def __init__(self) -> None:
        self.stream: Any = None  # a binary stream when the fast path is on
        self._second = -1
        self._prefix = ""
        self._flush_due = False

    def configure(self, stream: Any) -> None:
        self.stream = stream

    def _ts(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # the date and time are formatted once a second
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"

    def write(self, fields: dict[str, Any]) -> bool:
        """Write the line (False: the fast path is off, log through structlog)."""
        stream = self.stream
        if stream is None:
            return False
        fields["level"] = "info"
        fields["logger"] = "service.http"
        fields["ts"] = self._ts()
        stream.write(_JSON.encode(fields) + b"\n")
        if not self._flush_due:
            # Buffered, so that a busy gateway makes one write a batch, not one per line;
            # flushed soon after, so that a quiet one does not hold its lines back.
            self._flush_due = True
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)
            except RuntimeError:  # no event loop: nothing would flush it later
                self.flush()
        return True

    def flush(self) -> None:
        self._flush_due = False
        if self.stream is not None:
            self.stream.flush()


ACCESS = AccessLog()


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level)
    fast = settings.log_format != "console" and level <= logging.INFO
    ACCESS.configure(sys.stdout.buffer if fast else None)
    renderer: structlog.types.Processor
    factory: Any
    if settings.log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
        factory = structlog.PrintLoggerFactory(sys.stdout)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries (aiohttp, aio-pika, aiormq, ...) log through the standard library: their
    # lines get the same shape (event, level, logger, ts) and renderer, so every line of
    # stdout is one JSON object.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _text(renderer),
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # aiormq logs a refused connection at ERROR and raises it too: our own reconnect loop
    # says so once, as the warning it is (bus.connect, retry.retry_forever).
    logging.getLogger("aiormq.connection").addFilter(_not_a_refused_transport)


def _not_a_refused_transport(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("error when creating transport")


def _text(renderer: structlog.types.Processor) -> structlog.types.Processor:
    """The renderer, giving str (what a logging.Formatter must return)."""

    def render(logger: Any, name: str, event: Any) -> Any:
        out = renderer(logger, name, event)
        return out.decode() if isinstance(out, bytes) else out

    return render


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
