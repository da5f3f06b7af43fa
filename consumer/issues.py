"""A run's ``issues``, rolled up as Merchant Center reports a feed's: one entry per (code,
column) with how many rows it touched, ``error`` (rows rejected) or ``warning`` (rows
accepted but changed by cleaning, columns kept as attributes or ignored, an encoding
found by ``auto``, an upsert file much smaller than the feed), the first lines, the first
message and where the docs explain the code."""

from __future__ import annotations

from service.core.contracts import Issue
from service.core.product import PRODUCT

FIRST_LINES = 3
DOCS = "docs/feed-format.md"
_COLUMN_CODES = {c.code for c in PRODUCT.columns}
_HEADER_CODES = {"COLUMN_KEPT_AS_ATTRIBUTE", "COLUMN_IGNORED"}


def docs_anchor(code: str) -> str:
    """Where docs/feed-format.md explains the code."""
    if code in _COLUMN_CODES or code == "VALUE_CLEANED":
        return f"{DOCS}#columns"
    if code in _HEADER_CODES:
        return f"{DOCS}#the-header"
    if code == "ENCODING_DETECTED":
        return f"{DOCS}#the-file"
    if code == "FILE_SHRANK":
        return f"{DOCS}#loading"
    return f"{DOCS}#rejected-rows"


class Issues:
    def __init__(self) -> None:
        self._by: dict[tuple[str, str | None], Issue] = {}

    def add(
        self,
        severity: str,
        code: str,
        column: str | None,
        lines: list[int],
        message: str,
        count: int = 1,
    ) -> None:
        issue = self._by.get((code, column))
        if issue is None:
            issue = self._by[(code, column)] = Issue(
                code=code,
                column=column,
                severity=severity,  # type: ignore[arg-type]
                count=0,
                lines=[],
                message=message,
                docs=docs_anchor(code),
            )
        issue.count += count
        if len(issue.lines) < FIRST_LINES:
            issue.lines = sorted({*issue.lines, *lines})[:FIRST_LINES]

    def result(self) -> list[Issue]:
        """Errors first, then the most frequent."""
        return sorted(
            self._by.values(),
            key=lambda i: (i.severity != "error", -i.count, i.code, i.column or ""),
        )
