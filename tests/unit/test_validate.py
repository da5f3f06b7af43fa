"""Header matching, row cleaning order, hashing."""

from __future__ import annotations

import pytest

from consumer.validate import HeaderInfo, RowValidator
from service.core.product import canonical_line, row_hash
from service.core.rules import RowFault


def test_header_matching_is_case_insensitive_trimmed_any_order():
    info = HeaderInfo([" PRICE", "Sku ", "colour", "name", "CURRENCY", ""])
    assert info.index == {"price": 0, "sku": 1, "name": 3, "currency": 4}
    assert info.attributes == [(2, "colour")]
    assert info.ignored == [""]  # a field without a name
    assert info.missing == [] and info.fault() is None


def test_merchant_center_names_are_aliases():
    info = HeaderInfo(["id", "title", "Price", "product_type", "google_product_category", "link"])
    assert info.index == {"sku": 0, "name": 1, "price": 2, "category": 3}
    # the lower-ranked alias of a column already taken is kept as an attribute
    assert info.attributes == [(4, "google_product_category"), (5, "link")]
    assert info.missing == []  # currency: carried by the price (15.00 USD)
    assert info.carried("currency")
    assert info.mapped == {
        "id": "sku",
        "title": "name",
        "Price": "price",
        "product_type": "category",
    }


def test_a_name_beats_an_alias_and_a_mapping_beats_both():
    info = HeaderInfo(["id", "sku", "name", "price", "currency"])
    assert info.index["sku"] == 1 and info.attributes == [(0, "id")]
    info = HeaderInfo(["id", "sku", "name", "price", "currency"], {"id": "sku"})
    assert info.index["sku"] == 0 and info.attributes == [(1, "sku")]


def test_two_fields_for_one_column_are_ambiguous():
    for header, mapping in [
        (["sku", "SKU", "name", "price", "currency"], None),
        (["a", "b", "name", "price", "currency"], {"a": "sku", "B": "sku"}),
        (["sku", "name", "price", "currency", "color", " color"], None),
    ]:
        fault = HeaderInfo(header, mapping).fault()
        assert fault is not None and fault[0] == "AMBIGUOUS_COLUMNS", header
    fault = HeaderInfo(["sku", "SKU", "name", "price", "currency"]).fault()
    assert fault is not None and fault[2] == {"ambiguous": {"sku": ["sku", "SKU"]}}


def test_unknown_columns_kept_ignored_or_rejected():
    header = ["sku", "name", "price", "currency", "color", "size"]
    assert [n for _, n in HeaderInfo(header).attributes] == ["color", "size"]
    ignoring = HeaderInfo(header, unknown="ignore")
    assert ignoring.attributes == [] and ignoring.ignored == ["color", "size"]
    fault = HeaderInfo(header, unknown="reject").fault()
    assert fault is not None and fault[0] == "UNKNOWN_COLUMNS"
    assert fault[2] == {"unknown": ["color", "size"]}
    assert HeaderInfo(header[:4], unknown="reject").fault() is None


def test_attribute_limits():
    many = ["sku", "name", "price", "currency", *[f"a{i}" for i in range(201)]]
    fault = HeaderInfo(many).fault()
    assert fault is not None and fault[0] == "TOO_MANY_ATTRIBUTES"
    fault = HeaderInfo(["sku", "name", "price", "currency", "x" * 101]).fault()
    assert fault is not None and fault[0] == "INVALID_ATTRIBUTE_NAME"
    v = RowValidator(HeaderInfo(["sku", "name", "price", "currency", "note"]))
    with pytest.raises(RowFault) as info:
        v.clean(["A", "b", "1", "USD", "y" * 5001])
    assert (info.value.code, info.value.column) == ("ATTRIBUTE_TOO_LONG", "note")


def test_attributes_are_trimmed_text_and_empty_ones_left_out():
    v = RowValidator(HeaderInfo(["sku", "name", "price", "currency", "color", "size", "x"]))
    values, attributes = v.clean(["A", "b", "1", "USD", " red ", "", "1,5"])
    assert attributes == {"color": "red", "x": "1,5"}
    assert canonical_line(values, attributes) == (
        'A,b,,1.00,USD,0,,,,,true,"{""color"":""red"",""x"":""1,5""}"'
    )
    values, attributes = v.clean(["A", "b", "1", "USD", "", "", ""])
    assert attributes == {} and canonical_line(values, attributes) == "A,b,,1.00,USD,0,,,,,true"


def test_a_price_with_its_currency():
    v = RowValidator(HeaderInfo(["id", "title", "price"]))
    assert v.clean(["A", "b", "15.00 USD"])[0][3:5] == ["15.00", "USD"]
    assert v.clean(["A", "b", "eur 7.5"])[0][3:5] == ["7.50", "EUR"]
    with pytest.raises(RowFault) as info:
        v.clean(["A", "b", "15.00"])
    assert (info.value.code, info.value.column) == ("INVALID_CURRENCY", "currency")
    with pytest.raises(RowFault) as info:
        v.clean(["A", "b", "15.00 XYZ"])
    assert info.value.code == "INVALID_CURRENCY"
    # with a currency column, the price is a plain amount
    v = RowValidator(HeaderInfo(["id", "title", "price", "currency"]))
    with pytest.raises(RowFault) as info:
        v.clean(["A", "b", "15.00 USD", "USD"])
    assert info.value.code == "INVALID_PRICE"


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
        [
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
        ],
        None,
    )


def line(row: tuple[list[object], dict[str, str] | None]) -> bytes:
    return canonical_line(*row).encode()


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
    values, _ = RowValidator(header).clean(["A-1", 'Say "hi", ok', "1", "usd", "multi\nline"])
    assert canonical_line(values) == 'A-1,"Say ""hi"", ok","multi\nline",1.00,USD,0,,,,,true'
    values, _ = RowValidator(header).clean(["A-1", "Plain", "1", "usd", "a;b"])
    assert canonical_line(values) == "A-1,Plain,a;b,1.00,USD,0,,,,,true"


def test_the_canonical_line_is_in_column_order_whatever_the_header():
    header = HeaderInfo(
        ["colour", "currency", "price", "name", "sku", "quantity"], unknown="ignore"
    )
    values, attributes = RowValidator(header).clean(["red", "eur", "$2", "Cap", "C-1", ""])
    assert attributes is None and canonical_line(values) == "C-1,Cap,,2.00,EUR,0,,,,,true"


def test_a_very_wide_header_is_read_by_the_slow_path():
    header = HeaderInfo(["price", *[f"c{i}" for i in range(1700)], "sku", "currency", "name"])
    assert header.wide
    fields = ["2", *["x"] * 1700, "W-1", "usd", "Wide"]
    values, attributes = RowValidator(header).clean(fields)
    assert attributes == {f"c{i}": "x" for i in range(1700)}
    assert canonical_line(values) == "W-1,Wide,,2.00,USD,0,,,,,true"
