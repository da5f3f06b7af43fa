"""S3 object event notifications, as AWS S3 and MinIO send them (pure functions).

The event JSON has ``Records[]`` with ``eventName`` (``ObjectCreated:Put``, or MinIO's
``s3:ObjectCreated:Put``) and ``s3.bucket.name``, ``s3.object.key`` (URL-encoded, ``+`` for
spaces), ``size``, ``eTag`` and ``sequencer``. S3 promises neither uniqueness nor order;
``sequencer`` orders the events of one key: hex strings, compared after padding to the same
length.
"""

from __future__ import annotations

import fnmatch
import urllib.parse

import msgspec


class S3Object(msgspec.Struct):
    key: str
    size: int | None = None
    eTag: str | None = None
    sequencer: str | None = None


class S3Bucket(msgspec.Struct):
    name: str


class S3Entity(msgspec.Struct):
    bucket: S3Bucket
    object: S3Object


class S3Record(msgspec.Struct):
    eventName: str
    s3: S3Entity


class S3Event(msgspec.Struct):
    Records: list[S3Record]


class Created(msgspec.Struct, frozen=True):
    """A new object version: what a watched feed loads."""

    bucket: str
    key: str
    size: int | None
    etag: str | None
    sequencer: str


def created(event: S3Event) -> list[Created]:
    out = []
    for record in event.Records:
        if "ObjectCreated" not in record.eventName:
            continue
        obj = record.s3.object
        key = urllib.parse.unquote_plus(obj.key)
        sequencer = obj.sequencer or ""
        out.append(
            Created(record.s3.bucket.name, key, obj.size, (obj.eTag or "").strip('"'), sequencer)
        )
    return out


def newer(sequencer: str, than: str | None) -> bool:
    """Whether ``sequencer`` orders after ``than`` (None: nothing seen yet)."""
    if than is None:
        return True
    width = max(len(sequencer), len(than))
    return sequencer.upper().rjust(width, "0") > than.upper().rjust(width, "0")


def is_pattern(uri: str) -> bool:
    return uri.endswith("/") or any(c in uri.rsplit("/", 1)[-1] for c in "*?[")


def fixed_part(uri: str) -> str:
    """The part of a watch before its glob: what must be inside the tenant's prefixes."""
    if uri.endswith("/"):
        return uri
    return uri.rsplit("/", 1)[0] + "/" if is_pattern(uri) else uri


def matches(watch: str, bucket: str, key: str) -> bool:
    uri = f"s3://{bucket}/{key}"
    if not is_pattern(watch):
        return uri == watch
    if watch.endswith("/"):
        return uri.startswith(watch) and "/" not in uri[len(watch) :]
    folder, glob = watch.rsplit("/", 1)
    return (
        uri.startswith(folder + "/")
        and "/" not in uri[len(folder) + 1 :]
        and (fnmatch.fnmatchcase(uri[len(folder) + 1 :], glob))
    )
