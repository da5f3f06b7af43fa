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
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.fastpath import FastBlock, FastPath
from consumer.frames import Batch, End, Header, WorkerConfig, decoder
from consumer.known import KnownRows
from consumer.parse_worker import process
from consumer.validate import HeaderInfo
from service.core.product import NAMES as COLUMNS
from service.core.product import PRODUCT, canonical_line, row_hash, sku_hash

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


def canon(taken: FastBlock | None) -> list[str]:
    assert taken is not None
    assert taken.hashes.tolist() == [row_hash(line) for line in taken.canon]
    return [line.decode() for line in taken.canon]


def test_a_clean_block_gives_its_lines_as_canonical_lines():
    block = CLEAN.replace("Green  shoe", "Green shoe")
    lines = block.splitlines()
    lines[1] = "SKU-2,Blue shoe,,0.99,EUR,0,,,,,true"  # an empty quantity / active written out
    assert canon(fast().take(block.encode(), None)) == lines


def test_crlf_lines_are_taken_without_cr():
    block = CLEAN.replace("Green  shoe", "Green shoe").replace("\n", "\r\n").encode()
    lines = canon(fast().take(block, None))
    assert len(lines) == 3 and not any("\r" in line for line in lines)


def test_a_recognised_line_is_not_even_parsed():
    # Stored hashes are of rows that were valid when loaded: a line that hashes to one is
    # that row, byte for byte, so the pattern never looks at it.
    odd = b"S-9,Odd,,not a price,USD,0,,,,,true"
    known = KnownRows(np.array([row_hash(odd)], np.int64), np.array([7], np.int64))
    assert fast().take(odd + b"\n", None) is None
    taken = fast().take(odd + b"\n", known)
    assert taken is not None and taken.stored.tolist() == [0]


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
    assert fast().take(block.encode(), None) is not None
    assert original in block
    assert fast().take(block.replace(original, doubtful, 1).encode(), None) is None


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
    assert fast().take((row + "\n").encode(), None) is None


def test_bytes_that_are_not_utf8_are_refused():
    assert fast().take(b"S,N\xff,,1.00,USD,,,,,,\n", None) is None


def test_other_delimiters_and_column_orders():
    header = ["price", "colour", "SKU", "currency", "name"]
    block = b'1.00|red|A-1|USD|Cap\n2.50|"a ""b"""|B-2|EUR|Hat\n'
    expected = [
        'A-1,Cap,,1.00,USD,0,,,,,true,"{""colour"":""red""}"',
        'B-2,Hat,,2.50,EUR,0,,,,,true,"{""colour"":""a \\""b\\""""}"',
    ]
    assert canon(fast(header, "|").take(block, None)) == expected
    assert canon(fast(header, "\t").take(block.replace(b"|", b"\t"), None)) == expected


def test_needless_quotes_are_not_canonical_but_clean():
    block = b'S-1,Cap,"plain",1.00,USD,1,,,,,true\nS-2,Hat,"a, b",1.00,USD,1,,,,,true\n'
    assert canon(fast().take(block, None)) == [
        "S-1,Cap,plain,1.00,USD,1,,,,,true",
        'S-2,Hat,"a, b",1.00,USD,1,,,,,true',
    ]


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
    "colour": ['a "b"', "two\nlines", "", " padded ", "x" * 5001],
    "size": ["", " M", "XL "],
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
    "size": ["", "M", "38,5"],
}
# Header names a feed may use for a column instead of its own (a registry alias, or a name
# its ``columns`` mapping gives it).
OTHER_NAMES = {c.name: list(c.aliases) for c in PRODUCT.columns}


@st.composite
def feeds(draw: Any) -> tuple[bytes, str, int, dict[str, str]]:
    optional = [c for c in VALUES if c not in ("sku", "name", "price", "currency")]
    extra = draw(st.lists(st.sampled_from(optional), unique=True))
    # Merchant Center's price of "15.00 USD" with no currency column, now and then.
    carried = not draw(st.integers(0, 4))
    columns = ["sku", "name", "price", *([] if carried else ["currency"]), *extra]
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

    if carried:
        at = columns.index("price")
        for row in rows:
            code = draw(st.sampled_from(CANONICAL["currency"] + VALUES["currency"] + [""]))
            row[at] = f"{row[at]} {code}" if code else row[at]
    # Each column under its name, an alias, or a name of the feed's mapping.
    mapping: dict[str, str] = {}
    header = []
    for c in columns:
        kind = draw(st.integers(0, 5))
        if kind == 0 and OTHER_NAMES.get(c):
            header.append(draw(st.sampled_from(OTHER_NAMES[c])))
        elif kind == 1 and c in PRODUCT.by_name:
            name = f"their {c}"
            mapping[name] = c
            header.append(name)
        else:
            header.append(c.upper() if draw(st.booleans()) else c)
    # A wide feed: more attribute columns, all mostly clean.
    for i in range(draw(st.integers(0, 20))):
        header.append(f"attr_{i}")
        for row in rows:
            row.append(draw(st.sampled_from(["", f"v{i}", "a,b", "x"])))
    buf = io.StringIO()
    for record in [header, *rows]:
        buf.write(delimiter.join(field(v) for v in record) + newline)
    data = buf.getvalue().encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 4)) == 0:
        data = gzip.compress(data)
    return data, delimiter, draw(st.integers(1, 300)), mapping


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


def staged(
    data: bytes,
    delimiter: str,
    read_bytes: int,
    fast_path: bool,
    min_split_lines: int = 64,
    columns: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What the worker tells the consumer, with the COPY text read as PostgreSQL reads it."""
    out = io.BytesIO()
    cfg = WorkerConfig(
        delimiter=delimiter,
        fast_path=fast_path,
        read_bytes=read_bytes,
        min_split_lines=min_split_lines,
        columns=columns or {},
    )
    process(io.BytesIO(data), out, cfg)
    raw = out.getvalue()
    frames = []
    while raw:
        size = int.from_bytes(raw[:4], "big")
        frames.append(decoder.decode(raw[4 : 4 + size]))
        raw = raw[4 + size :]
    assert any(isinstance(f, Header) for f in frames)
    rows, errors = [], []
    for frame in frames:
        if isinstance(frame, Batch):
            errors += frame.errors
            for rec in copy_csv(frame.payload.decode(), ","):
                *values, attributes, rh, sh, line = rec
                row: dict[str, Any] = dict(zip(COLUMNS, values, strict=True))
                assert row["quantity"] is not None and row["active"] is not None
                row["attributes"] = msgspec.json.decode(attributes) if attributes else None
                line_text = canonical_line([row[c] for c in COLUMNS], row["attributes"]).encode()
                assert int(rh) == row_hash(line_text) and int(sh) == sku_hash(row["sku"].encode())
                rows.append((int(line or 0), row))
    end = next(f for f in frames if isinstance(f, End))
    return {
        "rows": rows,
        "errors": [msgspec.to_builtins(e) for e in errors],
        "counts": (end.rows_read, end.rows_valid, end.rows_rejected),
        "fast_rows": end.fast_rows,
    }


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds(), st.integers(1, 8))
def test_the_fast_path_stages_exactly_what_the_slow_path_stages(feed, split):
    data, delimiter, read_bytes, mapping = feed
    # Blocks the fast path refuses are halved down to ``split`` lines (often cutting a
    # quoted field that spans lines): what is staged and rejected must not change.
    with_fast = staged(data, delimiter, read_bytes, True, split, mapping)
    without = staged(data, delimiter, read_bytes, fast_path=False, columns=mapping)
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


def test_a_doubtful_line_costs_the_slow_path_a_few_lines_not_its_block():
    rows = [
        f"SKU-{i},Name {i},,{i}.50,USD,{i % 50},Cat,Brand,,2026-01-02T03:04:05Z,true"
        for i in range(1000)
    ]
    rows[400] = "SKU-400,  Name   400 ,,$400.5,usd,,Cat,Brand,,,yes"  # messy: cleaned
    rows[401] = 'SKU-401,Name 401,"two\nlines",401.50,USD,1,Cat,Brand,,,true'  # spans lines
    rows[700] = "SKU-700,Name 700,,abc,USD,1,Cat,Brand,,,true"  # rejected
    data = (",".join(HEADER) + "\n" + "\n".join(rows) + "\n").encode()
    one_block = 1 << 20
    split = staged(data, ",", one_block, fast_path=True)
    whole = staged(data, ",", one_block, fast_path=True, min_split_lines=10**9)
    slow = staged(data, ",", one_block, fast_path=False)
    assert split["counts"] == whole["counts"] == slow["counts"] == (1000, 999, 1)
    assert split["rows"] == whole["rows"] == slow["rows"]
    assert split["errors"] == whole["errors"] == slow["errors"]
    assert whole["fast_rows"] == 0  # the whole block went the slow way
    assert split["fast_rows"] > 1000 - 3 * 64  # only pieces around the three lines did
