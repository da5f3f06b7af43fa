"""An upload's body as the gateway reads it: checked before anything is created (declared
length, Content-Type, an empty body), then streamed with its limits (a minimum transfer
rate, a total deadline, the inflation caps of a ``Content-Encoding: gzip`` body).

Every limit answers with the same error a client can act on: 413 ``PAYLOAD_TOO_LARGE`` or
408 ``REQUEST_TIMEOUT`` with the limit in ``details``, 400 for an empty body, 415 without a
Content-Type. docs/operations.md ("Upload limits") lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import hdrs, web

from service.core.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from service.core.settings import Settings

UPLOAD_TYPES = (
    "text/csv",
    "application/csv",
    "text/plain",
    "application/gzip",
    "application/x-gzip",
    "application/octet-stream",
)


def check_upload_type(request: web.Request) -> None:
    """415 for a body of another type, or of no declared type at all (aiohttp would call it
    application/octet-stream, which hides a client that forgot the header)."""
    if hdrs.CONTENT_TYPE not in request.headers or request.content_type not in UPLOAD_TYPES:
        declared = request.headers.get(hdrs.CONTENT_TYPE)
        raise UnsupportedMediaType(
            (f"Content-Type {declared} is not accepted" if declared else "No Content-Type")
            + ": send the CSV as text/csv (optionally with Content-Encoding: gzip), or JSON"
            " with an s3_uri",
            details={"content_type": declared},
        )


class UploadBody:
    """One upload's body. ``open()`` checks what can be known before reading (declared
    length) and reads the first chunk (an empty body is refused before a feed or a file
    version is created); ``chunks()`` then streams the whole body under its limits."""

    def __init__(self, request: web.Request, settings: Settings) -> None:
        self.request = request
        self.settings = settings
        self._first = b""
        self._waited = 0.0  # seconds spent waiting for the client in the current window
        self._window_bytes = 0
        self._started = time.monotonic()
        gzip = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower() == "gzip"
        declared = request.content_length
        # aiohttp inflates a Content-Encoding: gzip body as it reads it: the caps of the
        # stored-file path (MAX_INFLATED_BYTES, MAX_INFLATE_RATIO) apply to what it yields.
        self.limit = settings.max_upload_bytes
        self.limit_reason = "MAX_UPLOAD_BYTES"
        if gzip:
            caps = [(settings.max_inflated_bytes, "MAX_INFLATED_BYTES")]
            if declared is not None:
                caps.append((declared * settings.max_inflate_ratio, "MAX_INFLATE_RATIO"))
            for cap, why in caps:
                if cap < self.limit:
                    self.limit, self.limit_reason = cap, why
        self.gzip = gzip

    async def open(self) -> None:
        declared = self.request.content_length
        if declared is not None and declared > self.settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"The declared Content-Length of {declared} bytes is over the limit of"
                f" {self.settings.max_upload_bytes} bytes (MAX_UPLOAD_BYTES)",
                details={"limit_bytes": self.settings.max_upload_bytes, "declared": declared},
            )
        self._first = await self._read()
        if not self._first:
            raise InvalidRequest(
                "The request body is empty: send the feed's CSV as the body",
                details={"field": "body"},
            )

    def too_large(self) -> PayloadTooLarge:
        if self.limit_reason == "MAX_UPLOAD_BYTES":
            text = f"The upload is larger than the limit of {self.limit} bytes"
        else:
            text = (
                f"The gzip body inflates past {self.limit} bytes ({self.limit_reason}:"
                f" at most {self.settings.max_inflate_ratio} times its compressed size,"
                f" {self.settings.max_inflated_bytes} bytes in all)"
            )
        return PayloadTooLarge(
            text, details={"limit_bytes": self.limit, "limit": self.limit_reason}
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        total = 0
        chunk = self._first
        while chunk:
            total += len(chunk)
            if total > self.limit:
                raise self.too_large()
            yield chunk
            chunk = await self._read()

    async def _read(self) -> bytes:
        """The next chunk the client sent (b"" at the end), under the time limits: over each
        UPLOAD_READ_TIMEOUT_SECONDS spent waiting for the client, at least one byte and at
        least UPLOAD_MIN_BYTES_PER_SECOND on average; UPLOAD_DEADLINE_SECONDS in all."""
        s = self.settings
        window = s.upload_read_timeout_seconds
        while True:
            left = s.upload_deadline_seconds - (time.monotonic() - self._started)
            if left <= 0:
                raise self._timeout(
                    f"The upload took longer than {s.upload_deadline_seconds:g} seconds in all"
                    " (UPLOAD_DEADLINE_SECONDS); it was abandoned",
                    "UPLOAD_DEADLINE_SECONDS",
                )
            began = time.monotonic()
            chunk: bytes | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(window - self._waited, left)):
                    chunk = await self.request.content.readany()
            self._waited += time.monotonic() - began
            self._window_bytes += len(chunk or b"")
            if self._waited >= window:
                self._check_window(window)
                self._waited, self._window_bytes = 0.0, 0
            if chunk is not None and (chunk or self.request.content.is_eof()):
                return chunk

    def _check_window(self, window: float) -> None:
        least = self.settings.upload_min_bytes_per_second * window
        if not self._window_bytes:
            raise self._timeout(
                f"No body bytes arrived for {window:g} seconds; the upload was abandoned",
                "UPLOAD_READ_TIMEOUT_SECONDS",
            )
        if self._window_bytes < least:
            raise self._timeout(
                f"The upload sent {self._window_bytes} bytes in {window:g} seconds, under"
                f" the minimum of {self.settings.upload_min_bytes_per_second} bytes a second"
                " (UPLOAD_MIN_BYTES_PER_SECOND); it was abandoned",
                "UPLOAD_MIN_BYTES_PER_SECOND",
            )

    def _timeout(self, message: str, limit: str) -> RequestTimeout:
        s = self.settings
        return RequestTimeout(
            message,
            details={
                "limit": limit,
                "timeout_s": s.upload_read_timeout_seconds,
                "min_bytes_per_second": s.upload_min_bytes_per_second,
                "deadline_s": s.upload_deadline_seconds,
            },
        )
