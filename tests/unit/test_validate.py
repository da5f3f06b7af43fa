"""Header matching, row cleaning order, hashing."""

from __future__ import annotations

import pytest

from consumer.rules import RowFault
from consumer.validate import HeaderInfo, RowValidator
from service.core.product import canonical_line, row_hash


def test_header_matching_is_case_insensitive_trimmed_any_order():
    info = HeaderInfo([" PRICE", "Sku ", "colour", "name", "CURRENCY", "sku"])
    assert info.index == {"price": 0, "sku": 1, "name": 3, "currency": 4}
    assert info.ignored == ["colour", "sku"]
    assert info.missing == []


def test_missing_required_columns_are_named():
    assert HeaderInfo(["sku", "description"]).missing == ["name", "price", "currency"]


def test_first_fault_by_column_order_is_reported():
    v = RowValidator(HeaderInfo(["currency", "price", "name", "sku"]))
    with pytest.raises(RowFault) as info:
        v.clean(["XXX-bad", "abc", "", "bad sku"])
    assert info.value.code == "INVALID_SKU"
    with pytest.raises(RowFault) as info:
        v.clean(["XXX-bad", "abc", "ok", "A-1"])
    assert info.value.code == "INVALID_PRICE"


def test_row_length():
    v = RowValidator(HeaderInfo(["sku", "name", "price", "currency"]))
    with pytest.raises(RowFault) as info:
        v.clean(["A", "b", "1"])
    assert (info.value.code, info.value.column) == ("ROW_LENGTH", None)


def test_absent_optional_columns_take_their_defaults():
    v = RowValidator(HeaderInfo(["sku", "name", "price", "currency"]))
    assert v.clean(["A-1", "n", "1", "usd"]) == (
        "A-1",
        "n",
        None,
        "1.00",
        "USD",
        0,
        None,
        None,
        None,
        None,
        "true",
    )


def line(values: tuple[object, ...]) -> bytes:
    return canonical_line(values).encode()


def test_messy_and_clean_spellings_hash_equal():
    header = HeaderInfo(["sku", "name", "price", "currency", "active", "gtin", "updated_at"])
    v = RowValidator(header)
    clean = v.clean(
        ["A-1", "Red shoe", "1234.50", "USD", "true", "4006381333931", "2026-01-02T00:00:00Z"]
    )
    messy = v.clean(
        [" A-1", "  Red   shoe ", " $1,234.5 ", " usd ", "YES", "4-006381-333931", "2026-01-02"]
    )
    assert clean == messy and row_hash(line(clean)) == row_hash(line(messy))
    other = v.clean(["A-1", "Red shoe", "1234.51", "USD", "true", "", ""])
    assert row_hash(line(other)) != row_hash(line(clean))


def test_the_canonical_line_quotes_free_text_only_when_it_must():
    header = HeaderInfo(["sku", "name", "price", "currency", "description"])
    values = RowValidator(header).clean(["A-1", 'Say "hi", ok', "1", "usd", "multi\nline"])
    assert canonical_line(values) == 'A-1,"Say ""hi"", ok","multi\nline",1.00,USD,0,,,,,true'
    values = RowValidator(header).clean(["A-1", "Plain", "1", "usd", "a;b"])
    assert canonical_line(values) == "A-1,Plain,a;b,1.00,USD,0,,,,,true"


def test_the_canonical_line_is_in_column_order_whatever_the_header():
    header = HeaderInfo(["colour", "currency", "price", "name", "sku", "quantity"])
    values = RowValidator(header).clean(["red", "eur", "$2", "Cap", "C-1", ""])
    assert canonical_line(values) == "C-1,Cap,,2.00,EUR,0,,,,,true"


def test_a_very_wide_header_is_read_by_the_slow_path():
    header = HeaderInfo(["price", *[f"c{i}" for i in range(1700)], "sku", "currency", "name"])
    assert header.wide
    fields = ["2", *["x"] * 1700, "W-1", "usd", "Wide"]
    values = RowValidator(header).clean(fields)
    assert canonical_line(values) == "W-1,Wide,,2.00,USD,0,,,,,true"
