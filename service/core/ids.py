"""Job and feed ids: a prefix plus a zero-padded number of at least five digits."""

from __future__ import annotations

import re

SUBMISSION = "JS"
VALIDATION = "JV"
FEED = "FD"

_ID_RE = re.compile(r"^(JS|JV|FD)(\d{5,18})$")


def make_id(prefix: str, number: int) -> str:
    return f"{prefix}{number:05d}"


def parse_id(value: str) -> tuple[str, int] | None:
    """Split a well-formed id into (prefix, number); ``None`` for anything malformed."""
    m = _ID_RE.match(value)
    if m is None:
        return None
    digits = m.group(2)
    if len(digits) > 5 and digits[0] == "0":
        return None  # JV012345 is not the canonical spelling of any id
    return m.group(1), int(digits)


def is_job_id(value: str) -> bool:
    parsed = parse_id(value)
    return parsed is not None and parsed[0] in (SUBMISSION, VALIDATION)


def is_feed_id(value: str) -> bool:
    parsed = parse_id(value)
    return parsed is not None and parsed[0] == FEED


# Correlation ids (x-request-id, an AMQP request_id or message id): what is safe to log and
# store as given; anything else is replaced (HTTP) or refused (AMQP).
CORRELATION_ID = r"^[A-Za-z0-9._:\-]{1,128}$"
_CORRELATION_RE = re.compile(CORRELATION_ID)


def is_correlation_id(value: str | None) -> bool:
    return bool(value) and _CORRELATION_RE.match(value or "") is not None
