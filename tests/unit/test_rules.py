"""Every cleaning and validation rule of feed-format.md's column table."""

from __future__ import annotations

import pytest

from service.core import rules
from service.core.rules import RowFault


def fault(fn, value) -> str:
    with pytest.raises(RowFault) as info:
        fn(value)
    return info.value.code


@pytest.mark.parametrize(
    "raw,clean", [(" A-1 ", "A-1"), ("a.b_c-d/e", "a.b_c-d/e"), ("x" * 64, "x" * 64)]
)
def test_sku_trimmed_and_allowed(raw, clean):
    assert rules.clean_sku(raw) == clean


@pytest.mark.parametrize("raw", ["", "  ", "bad sku", "x" * 65, "a,b", "é", "a+b"])
def test_sku_rejected(raw):
    assert fault(rules.clean_sku, raw) == "INVALID_SKU"


def test_name_trims_and_collapses_whitespace():
    assert rules.clean_name("  Big \t  red\n shoe ") == "Big red shoe"
    assert rules.clean_name("x" * 300) == "x" * 300
    assert fault(rules.clean_name, "   ") == "INVALID_NAME"
    assert fault(rules.clean_name, "x" * 301) == "INVALID_NAME"


def test_optional_texts():
    assert rules.clean_description("  ") is None
    assert rules.clean_description(" d ") == "d"
    assert rules.clean_description("x" * 5000) == "x" * 5000
    assert fault(rules.clean_description, "x" * 5001) == "INVALID_DESCRIPTION"
    assert rules.clean_category("x" * 200) == "x" * 200
    assert fault(rules.clean_category, "x" * 201) == "INVALID_CATEGORY"
    assert fault(rules.clean_brand, "x" * 201) == "INVALID_BRAND"
    assert rules.clean_brand("") is None


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("1234.50", "1234.50"),
        ("$1,234.50", "1234.50"),
        (" €12.5 ", "12.50"),
        ("£0", "0.00"),
        ("0007.1", "7.10"),
        ("1,234", "1234.00"),
        ("9999999999.99", "9999999999.99"),
        ("$ 3.00", "3.00"),
        ("1,234,567.89", "1234567.89"),
    ],
)
def test_price_cleaning(raw, clean):
    assert rules.clean_price(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "-5.00",
        "abc",
        "12.345",
        "",
        "1e9999",
        "10000000000",
        "$$1",
        "1,23.00",
        "12,34",
        "1.",
        ".5",
        "¥5",
        "1 000",
        "٣.00",  # Arabic-Indic digits: PostgreSQL's numeric would refuse them mid-load
        "１２.００",  # full-width digits
    ],
)
def test_price_rejected(raw):
    assert fault(rules.clean_price, raw) == "INVALID_PRICE"


def test_currency():
    assert rules.clean_currency(" usd ") == "USD"
    for raw in ("XXQ", "dollars", "", "US"):
        assert fault(rules.clean_currency, raw) == "INVALID_CURRENCY"


@pytest.mark.parametrize(
    "raw,value", [("", 0), (" 7 ", 7), ("0", 0), ("007", 7), (str(2**31 - 1), 2**31 - 1)]
)
def test_quantity(raw, value):
    assert rules.clean_quantity(raw) == value


@pytest.mark.parametrize("raw", ["-1", "3.5", "lots", "99999999999", str(2**31), "+1", "٣", "１２"])
def test_quantity_rejected(raw):
    assert fault(rules.clean_quantity, raw) == "INVALID_QUANTITY"


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("4006381333931", "4006381333931"),
        ("4-006381-333931", "4006381333931"),
        (" 4006381 333931 ", "4006381333931"),
        ("96385074", "96385074"),
        ("036000291452", "036000291452"),
        ("10036000291459", "10036000291459"),
        ("", None),
    ],
)
def test_gtin(raw, clean):
    assert rules.clean_gtin(raw) == clean


@pytest.mark.parametrize(
    "raw", ["4006381333932", "123", "40063813339311", "abcdefgh", "123456789012345"]
)
def test_gtin_rejected(raw):
    assert fault(rules.clean_gtin, raw) == "INVALID_GTIN"


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z"),
        ("2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05Z"),
        ("2026-01-02t03:04:05.25z", "2026-01-02T03:04:05.250000Z"),
        ("2026-01-02", "2026-01-02T00:00:00Z"),
        ("", None),
        ("2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05.123456Z"),
        # the year keeps its 4 digits (PostgreSQL reads "1-01-01" as 2001)
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("0999-06-01", "0999-06-01T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ],
)
def test_updated_at(raw, clean):
    assert rules.clean_updated_at(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "2026-13-01",
        "yesterday",
        "2026-02-30T00:00:00Z",
        "2026-01-02T03:04:05",
        "20260102",
        "2026-01-02T25:00:00Z",
        "٢٠٢٦-01-01",
        # in range as written, out of range in UTC: a rejection, not a crash of the worker
        "9999-12-31T23:00:00-05:00",
        "0001-01-01T00:30:00+01:00",
    ],
)
def test_updated_at_rejected(raw):
    assert fault(rules.clean_updated_at, raw) == "INVALID_TIMESTAMP"


@pytest.mark.parametrize(
    "raw,flag",
    [
        ("", "true"),
        ("YES", "true"),
        (" y ", "true"),
        ("1", "true"),
        ("True", "true"),
        ("no", "false"),
        ("N", "false"),
        ("0", "false"),
        ("FALSE", "false"),
    ],
)
def test_active(raw, flag):
    assert rules.clean_active(raw) == flag


@pytest.mark.parametrize("raw", ["maybe", "2", "on?", "on"])
def test_active_rejected(raw):
    assert fault(rules.clean_active, raw) == "INVALID_BOOLEAN"
