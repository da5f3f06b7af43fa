"""S3 event documents and watch patterns (service/core/s3_events.py)."""

from __future__ import annotations

import msgspec
import pytest

from service.core.s3_events import S3Event, created, fixed_part, matches, newer


@pytest.mark.parametrize(
    "watch,key,hit",
    [
        ("s3://b/in/feed.csv", "in/feed.csv", True),
        ("s3://b/in/feed.csv", "in/feed.csv.bak", False),
        ("s3://b/in/", "in/a.csv", True),
        ("s3://b/in/", "in/deeper/a.csv", False),
        ("s3://b/in/*.csv", "in/day 1.csv", True),
        ("s3://b/in/*.csv", "in/day1.tsv", False),
        ("s3://b/in/*.csv", "in/x/day1.csv", False),
        ("s3://b/in/*.csv", "inbox/day1.csv", False),
    ],
)
def test_watch_patterns(watch, key, hit):
    assert matches(watch, "b", key) is hit


def test_the_fixed_part_is_what_the_tenant_must_be_allowed():
    assert fixed_part("s3://b/in/*.csv") == "s3://b/in/"
    assert fixed_part("s3://b/in/") == "s3://b/in/"
    assert fixed_part("s3://b/in/feed.csv") == "s3://b/in/feed.csv"


def test_sequencers_compare_as_equal_length_hex():
    assert newer("0A", None) and newer("0A", "09") and newer("100", "FF")
    assert not newer("0A", "0A") and not newer("00000009", "0A")


def test_only_created_objects_count_and_keys_are_decoded():
    event = msgspec.json.decode(
        b'{"Records": [{"eventName": "s3:ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"},'
        b' "object": {"key": "x"}}}, {"eventName": "ObjectCreated:Put", "s3": {"bucket":'
        b' {"name": "b"}, "object": {"key": "in%2Fday+1.csv", "size": 3, "eTag": "\\"e\\"",'
        b' "sequencer": "0A"}}}]}',
        type=S3Event,
    )
    (obj,) = created(event)
    assert (obj.bucket, obj.key, obj.size, obj.etag, obj.sequencer) == (
        "b",
        "in/day 1.csv",
        3,
        "e",
        "0A",
    )
