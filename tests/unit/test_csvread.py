"""The record reader: quoting, line numbers, BOM, line endings, and per-record faults."""

from __future__ import annotations

import gzip
import os

import pytest

from consumer.csvread import FIELD_LIMIT, RecordReader
from consumer.inflate import DecompressionLimit, Inflater


def read(data: bytes, delimiter: str = ",", chunk: int = 7):
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return [(r.line, r.fields, r.fault) for r in RecordReader(chunks, delimiter)]


def test_line_numbers_stay_right_after_multiline_fields():
    data = b'h1,h2\na,"multi\nline\nfield"\nb,c\n"x\ny",z\nlast,row\n'
    assert read(data) == [
        (1, ["h1", "h2"], None),
        (2, ["a", "multi\nline\nfield"], None),
        (5, ["b", "c"], None),
        (6, ["x\ny", "z"], None),
        (8, ["last", "row"], None),
    ]


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_crlf_bom_and_no_final_newline(chunk):
    data = b'\xef\xbb\xbfsku,name\r\nA,"q ""x"", y"\r\nB,two'
    assert read(data, chunk=chunk) == [
        (1, ["sku", "name"], None),
        (2, ["A", 'q "x", y'], None),
        (3, ["B", "two"], None),
    ]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiters(delimiter):
    d = delimiter.encode()
    data = b"a" + d + b"b\n1" + d + b'"x' + d + b'y"\n'
    assert read(data, delimiter) == [(1, ["a", "b"], None), (2, ["1", "x" + delimiter + "y"], None)]


def test_blank_lines_are_skipped_but_counted():
    assert read(b"a,b\n\n1,2\n\r\n3,4\n") == [
        (1, ["a", "b"], None),
        (3, ["1", "2"], None),
        (5, ["3", "4"], None),
    ]


def test_invalid_utf8_rejects_only_that_record():
    data = b"a,b\n1,ok\n2,bad\xff\xfe\n3,fine\n"
    assert read(data) == [
        (1, ["a", "b"], None),
        (2, ["1", "ok"], None),
        (3, None, "INVALID_ENCODING"),
        (4, ["3", "fine"], None),
    ]


def test_nul_byte_rejects_the_record():
    assert read(b"a,b\n1,x\x00y\n2,z\n")[1:] == [
        (2, None, "INVALID_CHARACTER"),
        (3, ["2", "z"], None),
    ]


def test_field_over_the_limit_rejects_the_record_and_resumes():
    big = b"x" * (FIELD_LIMIT + 10)
    data = b'a,b\n1,"' + big + b'\nmore"\n2,after\n3,' + big + b"\n4,end\n"
    assert read(data, chunk=4096) == [
        (1, ["a", "b"], None),
        (2, None, "FIELD_TOO_LARGE"),
        (4, ["2", "after"], None),
        (5, None, "FIELD_TOO_LARGE"),
        (6, ["4", "end"], None),
    ]


def test_unterminated_quote_is_one_rejection_at_its_line():
    data = b'a,b\n1,ok\n2,"never closed\n3,x\n4,y\n'
    assert read(data) == [
        (1, ["a", "b"], None),
        (2, ["1", "ok"], None),
        (3, None, "UNTERMINATED_QUOTE"),
    ]


def test_unterminated_quote_swallowing_a_large_rest_keeps_memory_flat():
    rest = b"".join(b"%d,row\n" % i for i in range(50_000))
    data = b'a,b\n1,"open\n' + rest
    rows = read(data, chunk=65536)
    assert rows == [(1, ["a", "b"], None), (2, None, "UNTERMINATED_QUOTE")]


def test_raw_is_cut_to_1k():
    # A record rejected by a column rule later: its raw text comes from raw_of_last().
    reader = RecordReader([b"a,b\n1," + b"y" * 5000 + b"\n"])
    records = iter(reader)
    next(records)
    assert next(records).fields is not None
    assert reader.raw_of_last() == ("1," + "y" * 5000)[:1024]
    # A record rejected while reading (a NUL byte) carries it in the record itself.
    faulty = list(RecordReader([b"a,b\n\x002," + b"z" * 5000 + b"\n"]))[1]
    assert faulty.fault == "INVALID_CHARACTER" and faulty.raw == ("2," + "z" * 5000)[:1024]


def test_only_line_feeds_end_lines():
    # U+2028, \x1c and \x85 are ordinary characters in a field, even in a CRLF file.
    data = "h1,h2\r\na\u2028b,c\x1cd\r\ne\x85f,g\r\n".encode()
    assert read(data) == [
        (1, ["h1", "h2"], None),
        (2, ["a\u2028b", "c\x1cd"], None),
        (3, ["e\x85f", "g"], None),
    ]


def test_blank_lines_count_in_line_numbers_even_in_faulty_blocks():
    data = b"a,b\n\n1,\xff\n\n2,ok\n"
    assert read(data, chunk=1000) == [
        (1, ["a", "b"], None),
        (3, None, "INVALID_ENCODING"),
        (5, ["2", "ok"], None),
    ]


def test_gzip_is_detected_and_streamed():
    data = b"a,b\n" + b"1,2\n" * 1000
    packed = gzip.compress(data)
    inflater = Inflater([packed[i : i + 100] for i in range(0, len(packed), 100)], 10**9, 1000)
    assert b"".join(inflater) == data and inflater.gzip


def test_multi_member_gzip():
    packed = gzip.compress(b"a,b\n1,2\n") + gzip.compress(b"3,4\n")
    assert b"".join(Inflater([packed], 10**9, 1000)) == b"a,b\n1,2\n3,4\n"


def test_plain_input_passes_through():
    assert b"".join(Inflater([b"a", b",b\n"], 10, 1)) == b"a,b\n"


def test_gzip_bomb_is_stopped_by_ratio():
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with pytest.raises(DecompressionLimit) as info:
        for _ in Inflater([bomb], 10**12, 100):
            pass
    assert "100 times" in info.value.message


def test_inflated_size_cap():
    packed = gzip.compress(os.urandom(3 * 1024 * 1024))
    with pytest.raises(DecompressionLimit) as info:
        for _ in Inflater([packed], 2 * 1024 * 1024, 1000):
            pass
    assert info.value.details["max_inflated_bytes"] == 2 * 1024 * 1024
