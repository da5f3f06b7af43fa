"""structlog set-up: one JSON object per line on stdout (or console rendering for humans)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

from service.settings import Settings

# msgspec writes the JSON line (several times faster than json.dumps: one line per request);
# anything it cannot encode is written as its repr.
_JSON = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event: dict[str, Any], **_: Any) -> bytes:
    return _JSON.encode(event)


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level)
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


def _text(renderer: structlog.types.Processor) -> structlog.types.Processor:
    """The renderer, giving str (what a logging.Formatter must return)."""

    def render(logger: Any, name: str, event: Any) -> Any:
        out = renderer(logger, name, event)
        return out.decode() if isinstance(out, bytes) else out

    return render


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
