"""Requests that fail before any handler runs (malformed HTTP, oversized headers).

aiohttp answers those from its protocol class, below the middlewares: a plain-text body and
an ERROR line with a traceback, for what is a client's fault. It offers no hook there, so
the gateway installs a subclass (``install()``, pinned aiohttp version, guarded by
tests/integration/test_faults.py) that answers with the one error body and logs one
WARNING line without a traceback. Server faults (5xx) keep aiohttp's handling.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web_protocol, web_server
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

from service.core.contracts import ErrorBody, encode
from service.core.logs import get_logger

log = get_logger("service.http")


class JsonErrorsRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        text = (message or (str(exc) if exc else "") or "Malformed HTTP request").strip()
        log.warning("http_bad_request", status=status, reason=text[:300], remote=request.remote)
        body = ErrorBody(
            error_code="INVALID_REQUEST",
            message=f"The HTTP request could not be read: {text[:300]}",
            detail="Invalid request",
            details={},
        )
        resp = Response(
            status=status, body=encode(body), content_type="application/json", charset="utf-8"
        )
        resp.force_close()
        return resp


def install() -> None:
    server_module: Any = web_server
    server_module.RequestHandler = JsonErrorsRequestHandler
