"""The fast path takes only blocks it would stage exactly as the slow path does.

The property test runs the whole parse worker twice over the same random feed, with and
without the fast path, and requires the same staged values on the same lines and the same
rejections: the fast path may only ever change how fast, never what.
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.fastpath import FastPath
from consumer.frames import Batch, End, Header, WorkerConfig, decoder
from consumer.parse_worker import process
from consumer.rules import COLUMNS
from consumer.validate import HeaderInfo

HEADER = list(COLUMNS)
CLEAN = (
    'SKU-1,Red shoe,"A ""good"" shoe, really",1234.50,USD,3,Shoes,Acme,4006381333931,'
    "2026-01-02T03:04:05Z,true\n"
    "SKU-2,Blue shoe,,0.99,EUR,,,,,,\n"
    "SKU-3,Green  shoe,plain text,12.00,GBP,0,Home & Garden,Brand,96385074,"
    "2026-01-02T03:04:05.250000Z,false\n"
)


def fast(header: list[str] = HEADER, delimiter: str = ",") -> FastPath:
    return FastPath(HeaderInfo(header), delimiter)


def test_a_clean_block_is_staged_as_it_is_with_line_numbers():
    block = CLEAN.replace("Green  shoe", "Green shoe").encode()
    text, count = fast().try_block(block, 2)
    assert count == 3
    assert text.splitlines() == [
        f"{n},{line}" for n, line in enumerate(block.decode().splitlines(), 2)
    ]


def test_crlf_lines_are_staged_with_lf():
    block = CLEAN.replace("Green  shoe", "Green shoe").replace("\n", "\r\n").encode()
    text, count = fast().try_block(block, 10)
    assert count == 3 and "\r" not in text and text.startswith("10,SKU-1,")


@pytest.mark.parametrize(
    "original,doubtful",
    [
        ("Green shoe", "Green  shoe"),  # two spaces: the name cleaner would collapse them
        ("SKU-3", " SKU-3"),  # untrimmed sku
        ("12.00", "12.0"),  # price not in canonical form
        ("12.00", "$12.00"),
        ("GBP", "gbp"),
        ("96385074", "96385075"),  # wrong GTIN check digit
        ("2026-01-02T03:04:05.250000Z", "2026-02-30T03:04:05Z"),  # no such day
        ("USD", "XXQ"),  # not an ISO 4217 code
    ],
)
def test_one_doubtful_line_sends_the_whole_block_to_the_slow_path(original, doubtful):
    block = CLEAN.replace("Green  shoe", "Green shoe")
    assert fast().try_block(block.encode(), 2) is not None
    assert original in block
    assert fast().try_block(block.replace(original, doubtful, 1).encode(), 2) is None


@pytest.mark.parametrize(
    "row",
    [
        'S,N,"",1.00,USD,,,,,,',  # quoted empty: '' to COPY, NULL to the cleaner
        'S,N," padded ",1.00,USD,,,,,,',
        'S,"N",,1.00,USD,,,,,,',  # a quoted name (the slow path unquotes it)
        "S,N,,1.00,USD,2147483647,,,,,",  # ten digits: left to the exact rule
        "S,N,,1.00,USD,,,,,,TRUE",
        "S,N,,1.00,USD,,,,,2026-01-02,",  # a date: cleaned to midnight UTC
        "S,N,,1.00,USD,,,,,,,extra",  # a field too many
        "S,N,,1.00,USD,,,,,",  # a field too few
        "S,N,a\x00b,1.00,USD,,,,,,",
        "S,N,x\ry,1.00,USD,,,,,,",
        'S,N,"multi\nline",1.00,USD,,,,,,',
        "S,N," + "d" * 5001 + ",1.00,USD,,,,,,",
        "S," + "n" * 301 + ",,1.00,USD,,,,,,",
        "S,N,,1.00,USD,,," + "b" * 201 + ",,,",
        'S,N,ab"c,1.00,USD,,,,,,',  # a lone quote inside an unquoted field
        "",  # a blank line
    ],
)
def test_lines_that_are_not_canonical_are_refused(row):
    assert fast().try_block((row + "\n").encode(), 2) is None


def test_bytes_that_are_not_utf8_are_refused():
    assert fast().try_block(b"S,N\xff,,1.00,USD,,,,,,\n", 2) is None


def test_other_delimiters_and_column_orders():
    header = ["price", "colour", "SKU", "currency", "name"]
    block = b'1.00|red|A-1|USD|Cap\n2.50|"a ""b"""|B-2|EUR|Hat\n'
    text, count = fast(header, "|").try_block(block, 5)
    assert count == 2 and text.startswith("5|1.00|red|A-1|USD|Cap\n6|2.50|")
    assert fast(header, "\t").try_block(block.replace(b"|", b"\t"), 5) is not None


# -- the whole worker, with and without the fast path ---------------------------------------

VALUES: dict[str, list[str]] = {  # messy, invalid and near-canonical spellings
    "sku": [" D-4 ", "D-4 ", "bad sku", "", "x" * 65, '"q"'],
    "name": ["  Red   shoe ", "Red  shoe", "", "n" * 301, "a,b", 'say "hi"', "two\nlines", "x\ty"],
    "description": [" padded", "padded ", 'with "quotes", and, commas ', "two\nlines", "d" * 5001],
    "price": ["$1,234.5", "1.5", "abc", "٣.00", "007.10", "07.10", "12,34", "1234.5", "1e3"],
    "currency": ["usd", "XXQ", " EUR ", "Usd"],
    "quantity": ["007", "2147483647", "2147483648", "-1", " 7", "00"],
    "category": [" Shoes ", "Shoes ", "c" * 201, "Home  Garden"],
    "brand": ["Acme  Co", "b" * 201, " Acme"],
    "gtin": ["4006381333932", "4-006381-333931", "4006381 333931", "123"],
    "updated_at": [
        "2026-02-30T00:00:00Z",
        "2026-01-02",
        "bad",
        "2026-01-02T03:04:05+00:00",
        "2026-01-02T03:04:05.000000Z",
        "2026-01-02t03:04:05z",
    ],
    "active": ["YES", "maybe", "TRUE", "True", "1", " true"],
    "colour": ['a "b"', "two\nlines", ""],
}
CANONICAL: dict[str, list[str]] = {
    "sku": ["A-1", "B.2/x", "c_3"],
    "name": ["Red shoe", "é ü"],
    "description": ["", "plain", 'with "quotes", and, commas'],
    "price": ["1234.50", "0.00"],
    "currency": ["USD", "EUR"],
    "quantity": ["", "7", "0"],
    "category": ["", "Shoes", "Home & Garden"],
    "brand": ["", "Acme"],
    "gtin": ["", "4006381333931", "96385074"],
    "updated_at": ["", "2026-01-02T03:04:05Z"],
    "active": ["", "true", "false"],
    "colour": ["", "red"],
}


@st.composite
def feeds(draw: Any) -> tuple[bytes, str, int]:
    optional = [c for c in VALUES if c not in ("sku", "name", "price", "currency")]
    extra = draw(st.lists(st.sampled_from(optional), unique=True))
    columns = ["sku", "name", "price", "currency", *extra]
    columns = draw(st.permutations(columns))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    rows = []
    for _ in range(draw(st.integers(1, 40))):
        # Field by field, mostly canonical: a block often holds exactly one doubtful field.
        rows.append(
            [
                draw(st.sampled_from(CANONICAL[c] if draw(st.integers(0, 9)) else VALUES[c]))
                for c in columns
            ]
        )
    newline = draw(st.sampled_from(["\n", "\r\n"]))

    def field(value: str) -> str:
        # Quoted when it must be, and now and then when it need not be (even when empty).
        if any(ch in value for ch in (delimiter, '"', "\n", "\r")) or not draw(st.integers(0, 5)):
            return '"' + value.replace('"', '""') + '"'
        return value

    buf = io.StringIO()
    header = [c.upper() if draw(st.booleans()) else c for c in columns]
    for record in [header, *rows]:
        buf.write(delimiter.join(field(v) for v in record) + newline)
    data = buf.getvalue().encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 4)) == 0:
        data = gzip.compress(data)
    return data, delimiter, draw(st.integers(1, 300))


def copy_csv(text: str, delimiter: str) -> list[list[str | None]]:
    """Records as PostgreSQL's COPY ... CSV reads them: an unquoted empty field is NULL, a
    quoted empty one is an empty string (Python's csv module cannot tell them apart)."""
    records: list[list[str | None]] = []
    fields: list[str | None] = []
    buf: list[str] = []
    quoted = in_quotes = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quotes:
            if ch == '"' and text[i + 1 : i + 2] == '"':
                buf.append('"')
                i += 1
            elif ch == '"':
                in_quotes = False
            else:
                buf.append(ch)
        elif ch == '"':
            in_quotes = quoted = True
        elif ch in (delimiter, "\n"):
            fields.append("".join(buf) if buf or quoted else None)
            buf, quoted = [], False
            if ch == "\n":
                records.append(fields)
                fields = []
        else:
            buf.append(ch)
        i += 1
    assert not buf and not fields and not in_quotes, "COPY text must end with a whole record"
    return records


def staged(data: bytes, delimiter: str, read_bytes: int, fast_path: bool) -> dict[str, Any]:
    """What the worker tells the consumer, with the COPY text read as PostgreSQL reads it."""
    out = io.BytesIO()
    cfg = WorkerConfig(delimiter=delimiter, fast_path=fast_path, read_bytes=read_bytes)
    process(io.BytesIO(data), out, cfg)
    raw = out.getvalue()
    frames = []
    while raw:
        size = int.from_bytes(raw[:4], "big")
        frames.append(decoder.decode(raw[4 : 4 + size]))
        raw = raw[4 + size :]
    header = next(f for f in frames if isinstance(f, Header))
    rows, errors = [], []
    for frame in frames:
        if isinstance(frame, Batch):
            errors += frame.errors
            for rec in copy_csv(frame.payload.decode(), delimiter):
                values = dict(zip(header.columns, rec[1:], strict=True))
                row = {c: values.get(c) for c in COLUMNS}
                if row["quantity"] is None:  # the SQL defaults of consumer/stage.py
                    row["quantity"] = "0"
                if row["active"] is None:
                    row["active"] = "true"
                rows.append((int(rec[0] or 0), row))
    end = next(f for f in frames if isinstance(f, End))
    return {
        "rows": rows,
        "errors": [msgspec.to_builtins(e) for e in errors],
        "counts": (end.rows_read, end.rows_valid, end.rows_rejected),
        "fast_rows": end.fast_rows,
    }


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
def test_the_fast_path_stages_exactly_what_the_slow_path_stages(feed):
    data, delimiter, read_bytes = feed
    with_fast = staged(data, delimiter, read_bytes, fast_path=True)
    without = staged(data, delimiter, read_bytes, fast_path=False)
    assert without["fast_rows"] == 0
    assert with_fast["rows"] == without["rows"]
    assert with_fast["errors"] == without["errors"]
    assert with_fast["counts"] == without["counts"]


def test_clean_feeds_mostly_take_the_fast_path():
    body = "".join(
        f'SKU-{i},Name {i},"Desc, ""{i}""",{i}.50,USD,{i % 50},Cat,Brand,,'
        f"2026-01-02T03:04:05Z,true\n"
        for i in range(2000)
    )
    data = (",".join(HEADER) + "\n" + body).encode()
    result = staged(data, ",", 4096, fast_path=True)
    assert result["counts"] == (2000, 2000, 0)
    assert result["fast_rows"] > 1900  # all but the header's block
    assert result["rows"] == staged(data, ",", 4096, fast_path=False)["rows"]
