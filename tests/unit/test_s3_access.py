"""The tenant boundary of s3_uri (service/core/s3_access.py) and the job error code list."""

from __future__ import annotations

import typing

import pytest

from service.core.contracts import JOB_ERROR_CODES, JobErrorCode
from service.core.s3 import parse_s3_uri
from service.core.s3_access import may_read, normalise_prefix, upload_uri


def test_every_job_error_code_is_documented():
    assert set(typing.get_args(JobErrorCode)) == set(JOB_ERROR_CODES)


@pytest.mark.parametrize(
    "uri,allowed,ok",
    [
        ("s3://feeds/tenants/7/FD1/JS1-x.csv", [], True),  # its own upload
        ("s3://feeds/tenants/8/FD1/JS1-x.csv", [], False),  # another tenant's
        ("s3://feeds/tenants/77/FD1/JS1-x.csv", [], False),  # 7 is not a prefix of 77
        ("s3://feeds/tenants/8/x.csv", ["s3://feeds/"], False),  # never lent
        ("s3://feeds/uploads/demo/FD1/JS1.csv", ["s3://feeds/"], False),  # legacy layout
        ("s3://partner/in/a.csv", [], False),
        ("s3://partner/in/a.csv", ["s3://partner/in/"], True),
        ("s3://partner/inbox/a.csv", ["s3://partner/in/"], False),
        ("s3://partner/in/../out/a.csv", ["s3://partner/in/"], False),
        ("s3://partner/in//a.csv", ["s3://partner/in/"], False),
        ("s3://partner/in/./a.csv", ["s3://partner/in/"], False),
    ],
)
def test_may_read(uri, allowed, ok):
    assert may_read(parse_s3_uri(uri), 7, "feeds", allowed) is ok


def test_upload_keys_are_unguessable_and_under_the_tenant():
    a = upload_uri("feeds", 7, "FD00001", "JS00001")
    b = upload_uri("feeds", 7, "FD00001", "JS00001")
    assert a != b and str(a).startswith("s3://feeds/tenants/7/FD00001/JS00001-")
    assert may_read(a, 7, "feeds", []) and not may_read(a, 8, "feeds", [])


@pytest.mark.parametrize(
    "value,expected",
    [("s3://b/", "s3://b/"), ("s3://b/p/q/", "s3://b/p/q/"), ("s3://b", "s3://b/")],
)
def test_prefixes_are_whole_folders(value, expected):
    assert normalise_prefix(value) == expected


@pytest.mark.parametrize("value", ["b/p/", "s3:///p/", "s3://b/p", "s3://b/../p/", "s3://b//"])
def test_bad_prefixes_are_refused(value):
    with pytest.raises(ValueError):
        normalise_prefix(value)
