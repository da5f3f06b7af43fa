"""The column rules of feed-format.md: cleaning, then validation, one function per column.

Each function takes the raw field and returns the cleaned, normalised value (the value that
is stored and hashed) or raises ``RowFault`` with the column's error code. Pure functions:
unit-tested directly.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from service.core.currencies import ISO_4217


class RowFault(Exception):
    def __init__(self, code: str, column: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.column = column
        self.message = message


_SKU = re.compile(r"[A-Za-z0-9._\-/]{1,64}")
# ASCII digits only: ``\d`` would also take Arabic-Indic and other digits, which PostgreSQL's
# numeric and timestamp casts refuse (one such row would fail the whole load).
_THOUSANDS = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")
_PRICE = re.compile(r"([0-9]+)(?:\.([0-9]{1,2}))?")
_QUANTITY = re.compile(r"[0-9]+")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))?"
)
_BOOLEANS = {
    "true": "true",
    "yes": "true",
    "y": "true",
    "1": "true",
    "false": "false",
    "no": "false",
    "n": "false",
    "0": "false",
}
_CURRENCY_SYMBOLS = ("$", "€", "£")
MAX_QUANTITY = 2**31 - 1


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


def clean_sku(value: str) -> str:
    sku = value.strip()
    if not _SKU.fullmatch(sku):
        raise RowFault(
            "INVALID_SKU",
            "sku",
            f"sku {_short(sku)!r} must be 1 to 64 characters of A-Z a-z 0-9 . _ - /",
        )
    return sku


def clean_name(value: str) -> str:
    name = " ".join(value.split())
    if not 1 <= len(name) <= 300:
        problem = "is empty" if not name else f"is {len(name)} characters; at most 300"
        raise RowFault("INVALID_NAME", "name", f"name {problem}")
    return name


def _optional_text(value: str, column: str, code: str, limit: int) -> str | None:
    text = value.strip()
    if len(text) > limit:
        raise RowFault(code, column, f"{column} is {len(text)} characters; at most {limit}")
    return text or None


def clean_description(value: str) -> str | None:
    return _optional_text(value, "description", "INVALID_DESCRIPTION", 5000)


def clean_category(value: str) -> str | None:
    return _optional_text(value, "category", "INVALID_CATEGORY", 200)


def clean_brand(value: str) -> str | None:
    return _optional_text(value, "brand", "INVALID_BRAND", 200)


def clean_price(value: str) -> str:
    """Canonical two-decimal string: ``$1,234.5`` → ``1234.50``."""
    text = value.strip()
    if text[:1] in _CURRENCY_SYMBOLS:
        text = text[1:].lstrip()
    if "," in text and _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    m = _PRICE.fullmatch(text)
    if m is None:
        raise RowFault(
            "INVALID_PRICE",
            "price",
            f"price {_short(value.strip())!r} is not a non-negative amount with at most 2 decimals",
        )
    whole = m.group(1).lstrip("0") or "0"
    if len(whole) > 10:
        raise RowFault(
            "INVALID_PRICE", "price", f"price {_short(value.strip())!r} is 10^10 or more"
        )
    return f"{whole}.{(m.group(2) or '').ljust(2, '0')}"


def clean_currency(value: str) -> str:
    code = value.strip().upper()
    if code not in ISO_4217:
        raise RowFault(
            "INVALID_CURRENCY",
            "currency",
            f"currency {_short(value.strip())!r} is not an ISO 4217 code",
        )
    return code


def clean_quantity(value: str) -> int:
    text = value.strip()
    if not text:
        return 0
    if not _QUANTITY.fullmatch(text) or int(text) > MAX_QUANTITY:
        raise RowFault(
            "INVALID_QUANTITY",
            "quantity",
            f"quantity {_short(text)!r} is not a whole number from 0 to {MAX_QUANTITY}",
        )
    return int(text)


def gtin_check_ok(digits: str) -> bool:
    """GS1 check digit: from the right, body digits weigh 3, 1, 3, 1, ..."""
    threes = sum(map(int, digits[-2::-2]))
    ones = sum(map(int, digits[-3::-2]))
    return (10 - (3 * threes + ones) % 10) % 10 == int(digits[-1])


def clean_gtin(value: str) -> str | None:
    text = value.strip().replace(" ", "").replace("-", "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) in (8, 12, 13, 14)):
        raise RowFault(
            "INVALID_GTIN", "gtin", f"gtin {_short(value.strip())!r} must be 8, 12, 13 or 14 digits"
        )
    if not gtin_check_ok(text):
        raise RowFault("INVALID_GTIN", "gtin", f"gtin {text} has a wrong check digit")
    return text


def clean_updated_at(value: str) -> str | None:
    """RFC 3339 date-time (with offset) or a date; normalised to UTC ``...Z``."""
    text = value.strip()
    if not text:
        return None
    if not _TIMESTAMP.fullmatch(text):
        raise RowFault(
            "INVALID_TIMESTAMP",
            "updated_at",
            f"updated_at {_short(text)!r} is not an RFC 3339 date-time or YYYY-MM-DD",
        )
    iso = text.replace("t", "T").replace("z", "Z").replace(" ", "T")
    if "." in iso:  # Python parses at most 6 fractional digits
        head, _, tail = iso.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        iso = head + "." + tail[: min(digits, 6)].ljust(6, "0") + tail[digits:]
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise RowFault(
            "INVALID_TIMESTAMP", "updated_at", f"updated_at {_short(text)!r} is not a valid date"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC
        raise RowFault(
            "INVALID_TIMESTAMP",
            "updated_at",
            f"updated_at {_short(text)!r} is outside the years 1 to 9999 in UTC",
        ) from None
    # isoformat() pads the year to 4 digits (strftime's %Y does not: year 1 would be read back
    # by PostgreSQL as 2001).
    spec = "microseconds" if parsed.microsecond else "seconds"
    return parsed.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def clean_active(value: str) -> str:
    text = value.strip().lower()
    if not text:
        return "true"
    flag = _BOOLEANS.get(text)
    if flag is None:
        raise RowFault(
            "INVALID_BOOLEAN",
            "active",
            f"active {_short(value.strip())!r} is not one of true false yes no y n 1 0",
        )
    return flag


def split_amount(value: str) -> tuple[str, str]:
    """Merchant Center's price with its currency, ``15.00 USD`` (or ``USD 15.00``): the
    amount and the code as written, the code '' when the field names none."""
    text = value.strip()
    head, space, tail = text.rpartition(" ")
    if space and len(tail) == 3 and tail.isalpha():
        return head, tail
    head, space, tail = text.partition(" ")
    if space and len(head) == 3 and head.isalpha():
        return tail, head
    return text, ""


def clean_carried_currency(code: str) -> str:
    """The currency a price field carries (``split_amount``) when the feed has no currency
    column."""
    if not code:
        raise RowFault(
            "INVALID_CURRENCY",
            "currency",
            "the feed has no currency column, and the price names no currency (like 15.00 USD)",
        )
    return clean_currency(code)


# Columns that map to no product column are kept as the product's attributes (text).
MAX_ATTRIBUTES = 200  # attribute columns in a header (more: the run fails, TOO_MANY_ATTRIBUTES)
MAX_ATTRIBUTE_NAME = 100  # characters of an attribute's name (more: INVALID_ATTRIBUTE_NAME)
MAX_ATTRIBUTE_VALUE = 5000  # characters of a value (more: the row is ATTRIBUTE_TOO_LONG)


def clean_attribute(value: str, name: str) -> str:
    """An attribute's value: trimmed; '' is no value (the attribute is left out)."""
    text = value.strip()
    if len(text) > MAX_ATTRIBUTE_VALUE:
        raise RowFault(
            "ATTRIBUTE_TOO_LONG",
            name,
            f"{_short(name)} is {len(text)} characters; at most {MAX_ATTRIBUTE_VALUE}",
        )
    return text
