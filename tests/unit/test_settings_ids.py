from __future__ import annotations

import pytest

from service.core import ids
from service.core.errors import ConfigError, JobNotFound
from service.core.settings import load_settings
from service.gateway.ratelimit import RateLimiter


def test_defaults_work_on_this_machine():
    s = load_settings({})
    assert s.http_port == 8080 and s.database_url.endswith("/feedjobs")
    assert s.s3_bucket == "feeds" and s.s3_endpoint_url is None


def test_environment_overrides_and_bad_values_name_the_variable():
    s = load_settings({"HTTP_PORT": "9090", "LOG_FORMAT": "console", "UNRELATED": "x"})
    assert s.http_port == 9090 and s.log_format == "console"
    with pytest.raises(ConfigError) as info:
        load_settings({"HTTP_PORT": "eighty"})
    assert "HTTP_PORT" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_settings({"LOG_FORMAT": "xml"})
    assert "LOG_FORMAT" in info.value.message


def test_ids():
    assert ids.make_id("JV", 12) == "JV00012" and ids.make_id("JV", 123456) == "JV123456"
    assert ids.parse_id("JV00012") == ("JV", 12)
    for bad in ("jv00012", "JV1234", "JV012345", "XX00001", "JV00012 "):
        assert ids.parse_id(bad) is None
    assert ids.is_job_id("JS00001") and not ids.is_job_id("FD00001")


def test_error_root_carries_seed_texts():
    err = JobNotFound("JV00000")
    assert (err.status, err.error_code, err.detail, err.message) == (
        404,
        "JOB_NOT_FOUND",
        "Job not found",
        "Job JV00000 not found",
    )


def test_token_bucket():
    rl = RateLimiter(rate=1, burst=2)
    assert rl.take(1, now=0)[0] and rl.take(1, now=0)[0]
    allowed, _, wait = rl.take(1, now=0)
    assert not allowed and wait == pytest.approx(1.0)
    assert rl.take(1, now=1.0)[0]
    assert rl.take(2, now=0)[0]  # buckets are per key


def test_the_encodings_are_named_once_for_the_api_and_the_schema():
    import typing
    from pathlib import Path

    from service.core.contracts import ENCODINGS, Encoding

    assert typing.get_args(Encoding) == ENCODINGS
    sql = (Path(__file__).resolve().parents[2] / "sql" / "0011_feed_encoding.sql").read_text()
    assert all(f"'{name}'" in sql for name in ENCODINGS)


def test_the_snapshot_guards_default_is_the_same_in_the_schema():
    from pathlib import Path

    from service.core.contracts import DEFAULT_MAX_DELETED_RATIO

    sql = (Path(__file__).resolve().parents[2] / "sql" / "0010_max_deleted_ratio.sql").read_text()
    assert f"DEFAULT {DEFAULT_MAX_DELETED_RATIO}" in sql
