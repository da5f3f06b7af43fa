"""Properties of feed-format.md over random feeds (hypothesis), at the parse worker:

- a valid feed, whatever its delimiter, quoting, BOM, line endings and compression, stages
  every row, in order, on its own line number, with its values intact;
- the messy spelling of a row cleans to the same values, hence the same hash, as its clean
  spelling.

tests/integration/test_feed_properties.py loads such feeds into PostgreSQL as well.
"""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.validate import HeaderInfo, RowValidator
from service.core.currencies import ISO_4217
from service.core.product import NAMES as COLUMNS
from service.core.product import canonical_line
from service.core.rules import gtin_check_ok
from tests.unit.test_fastpath import staged

OPTIONAL = ("description", "quantity", "category", "brand", "gtin", "updated_at", "active")
# Printable characters that are not white space (str.split() would collapse those).
_CHARS = st.characters(blacklist_categories=("Z", "C"), blacklist_characters="\x1c\x1d\x1e\x1f")
WORD = st.text(_CHARS, min_size=1, max_size=8)


def words(joiners: list[str], max_words: int, max_len: int) -> st.SearchStrategy[str]:
    return (
        st.lists(st.tuples(WORD, st.sampled_from(joiners)), min_size=1, max_size=max_words)
        .map(lambda ws: "".join(w + j for w, j in ws).rstrip("".join(joiners)))
        .filter(lambda s: 1 <= len(s) <= max_len and s == s.strip())
    )


@st.composite
def gtins(draw: Any) -> str:
    body = draw(st.sampled_from([7, 11, 12, 13]))
    digits = "".join(str(draw(st.integers(0, 9))) for _ in range(body))
    check = next(d for d in "0123456789" if gtin_check_ok(digits + d))
    return digits + check


@st.composite
def products(draw: Any) -> dict[str, str | None]:
    """One valid product, as its clean (canonical) values."""
    when = draw(
        st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
        )
    )
    spec = "microseconds" if when.microsecond else "seconds"
    return {
        "sku": draw(st.from_regex(r"[A-Za-z0-9._\-/]{1,64}", fullmatch=True)),
        "name": draw(words([" "], 6, 300)),
        "description": draw(st.none() | words([" ", "\n", ", "], 12, 5000)),
        "price": f"{draw(st.integers(0, 10**10 - 1))}.{draw(st.integers(0, 99)):02d}",
        "currency": draw(st.sampled_from(sorted(ISO_4217))),
        "quantity": str(draw(st.integers(0, 2**31 - 1))),
        "category": draw(st.none() | words([" "], 4, 200)),
        "brand": draw(st.none() | words([" "], 3, 200)),
        "gtin": draw(st.none() | gtins()),
        "updated_at": draw(
            st.none() | st.just(when.replace(tzinfo=None).isoformat(timespec=spec) + "Z")
        ),
        "active": draw(st.sampled_from(["true", "false"])),
    }


@st.composite
def valid_feeds(draw: Any) -> tuple[bytes, str, list[str], list[dict[str, str | None]]]:
    extra = draw(st.lists(st.sampled_from(OPTIONAL), unique=True))
    columns = draw(st.permutations(["sku", "name", "price", "currency", *extra]))
    rows = draw(st.lists(products(), min_size=1, max_size=25, unique_by=lambda p: p["sku"]))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    buf = io.StringIO()
    writer = csv.writer(
        buf,
        delimiter=delimiter,
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
    )
    writer.writerow(columns)
    writer.writerows([[row[c] or "" for c in columns] for row in rows])
    data = buf.getvalue().encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.booleans()):
        data = gzip.compress(data)
    expected = [
        {**{c: (row[c] if c in columns else None) for c in COLUMNS}, "attributes": None}
        for row in rows
    ]
    return data, delimiter, columns, expected


def physical_lines(rows: list[dict[str, str | None]], columns: list[str]) -> list[int]:
    """The line each record starts on: fields with line breaks make records longer."""
    lines, line = [], 2
    for row in rows:
        lines.append(line)
        line += 1 + sum((row[c] or "").count("\n") for c in columns)
    return lines


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_feeds(), st.integers(16, 4096))
def test_a_valid_feed_stages_every_row_intact(feed, read_bytes):
    data, delimiter, columns, expected = feed
    got = staged(data, delimiter, read_bytes, fast_path=True)
    assert got["errors"] == []
    assert got["counts"] == (len(expected), len(expected), 0)
    for row in expected:  # the SQL defaults of an absent quantity / active
        row["quantity"] = row["quantity"] or "0"
        row["active"] = row["active"] or "true"
    assert [values for _, values in got["rows"]] == expected
    assert [line for line, _ in got["rows"]] == physical_lines(expected, columns)


# -- messy spellings ------------------------------------------------------------------------


@st.composite
def messy(draw: Any, clean: dict[str, str | None]) -> dict[str, str]:
    """Another spelling of ``clean`` that feed-format.md's cleaning maps back to it."""

    def pad(value: str) -> str:
        return (
            draw(st.sampled_from(["", " ", "  ", "\t"]))
            + value
            + draw(st.sampled_from(["", " ", "\t "]))
        )

    out: dict[str, str] = {}
    whole, cents = (clean["price"] or "0.00").split(".")
    price = f"{int(whole):,}" if draw(st.booleans()) else whole
    if cents.endswith("0") and draw(st.booleans()):
        cents = cents[:-1]
    out["price"] = pad(draw(st.sampled_from(["", "$", "€", "£"])) + price + "." + cents)
    out["sku"] = pad(clean["sku"] or "")
    gap = draw(st.sampled_from([" ", "  ", " \t"]))
    out["name"] = pad((clean["name"] or "").replace(" ", gap))
    out["description"] = pad(clean["description"] or "")
    case = draw(st.sampled_from([str.lower, str.upper, str.title]))
    out["currency"] = pad(case(clean["currency"] or ""))
    zeros = draw(st.sampled_from(["", "0", "00"]))  # leading zeros mean nothing
    quantity = clean["quantity"] or "0"
    out["quantity"] = pad("" if quantity == "0" and draw(st.booleans()) else zeros + quantity)
    out["category"] = pad(clean["category"] or "")
    out["brand"] = pad(clean["brand"] or "")
    gtin = clean["gtin"] or ""
    if gtin and draw(st.booleans()):
        gtin = "-".join([gtin[:1], gtin[1:7], gtin[7:]])
    out["gtin"] = pad(gtin)
    stamp = clean["updated_at"] or ""
    if stamp.endswith("T00:00:00Z") and draw(st.booleans()):
        stamp = stamp[:10]  # a date means midnight UTC
    elif stamp and draw(st.booleans()):
        stamp = stamp[:-1] + "+00:00"
    out["updated_at"] = pad(stamp)
    synonyms = {"true": ["", "true", "TRUE", "yes", "Y", "1"], "false": ["false", "No", "n", "0"]}
    out["active"] = pad(draw(st.sampled_from(synonyms[clean["active"] or "true"])))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_messy_spelling_cleans_and_hashes_like_the_clean_one(data):
    clean = data.draw(products())
    validator = RowValidator(HeaderInfo(list(COLUMNS)))
    canonical = validator.clean([clean[c] or "" for c in COLUMNS])
    spelled = data.draw(messy(clean))
    assert validator.clean([spelled[c] for c in COLUMNS]) == canonical
    assert canonical_line(*validator.clean([spelled[c] for c in COLUMNS])) == canonical_line(
        *canonical
    )
