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
