"""S3 access through aioboto3: one client per process, streamed uploads and reads."""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import aiohttp
import botocore.exceptions
import msgspec

from service.core import s3_events
from service.core.errors import InvalidRequest, PayloadTooLarge, StorageError
from service.core.settings import Settings

PART_SIZE = 8 * 1024 * 1024  # S3's minimum part is 5 MiB; 8 MiB keeps memory flat and calls few


class S3Uri(msgspec.Struct, frozen=True):
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(value: str) -> S3Uri:
    if not value.startswith("s3://"):
        raise InvalidRequest(
            f"s3_uri must look like s3://bucket/key, got {value[:200]!r}",
            details={"field": "s3_uri"},
        )
    bucket, _, key = value[5:].partition("/")
    if not bucket or not key:
        raise InvalidRequest(
            f"s3_uri must name a bucket and a key, got {value[:200]!r}", details={"field": "s3_uri"}
        )
    return S3Uri(bucket, key)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"region_name": settings.s3_region}
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.aws_access_key_id:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key
    elif settings.s3_endpoint_url:
        # A local S3 server (moto, MinIO in dev) accepts any credentials.
        kwargs["aws_access_key_id"] = "test"
        kwargs["aws_secret_access_key"] = "test"
    return kwargs


@asynccontextmanager
async def s3_client(settings: Settings) -> AsyncIterator[Any]:
    session = aioboto3.Session()
    async with session.client("s3", **client_kwargs(settings)) as client:
        yield client


# S3 (or MinIO, or moto) not reachable: refused, reset or timed out connections, a body cut
# off mid-read. Faults of a dependency: waited out at start, a run interrupted mid-load.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ConnectionError,
    aiohttp.ClientError,
)


async def ensure_bucket(client: Any, bucket: str) -> None:
    try:
        await client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        try:
            await client.create_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


class Stored(msgspec.Struct):
    bytes: int
    sha256: str
    etag: str


class _Upload:
    """One object written part by part: a plain PUT if it fits in one part, else multipart
    (started at the first full part)."""

    def __init__(self, client: Any, uri: S3Uri, content_type: str) -> None:
        self.client, self.uri, self.content_type = client, uri, content_type
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    async def part(self, body: bytes) -> None:
        where = {"Bucket": self.uri.bucket, "Key": self.uri.key}
        if self.upload_id is None:
            created = await self.client.create_multipart_upload(
                **where, ContentType=self.content_type
            )
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        resp = await self.client.upload_part(
            **where, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"ETag": resp["ETag"], "PartNumber": number})

    async def finish(self, rest: bytes) -> str:
        """Write what is left and complete the object; its ETag."""
        where = {"Bucket": self.uri.bucket, "Key": self.uri.key}
        if self.upload_id is None:
            resp = await self.client.put_object(**where, Body=rest, ContentType=self.content_type)
            return str(resp["ETag"])
        if rest:
            await self.part(rest)
        resp = await self.client.complete_multipart_upload(
            **where, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        return str(resp["ETag"])

    async def abort(self) -> None:
        if self.upload_id is None:
            return
        with contextlib.suppress(
            botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
        ):
            await self.client.abort_multipart_upload(
                Bucket=self.uri.bucket, Key=self.uri.key, UploadId=self.upload_id
            )


async def upload_stream(
    client: Any,
    uri: S3Uri,
    chunks: AsyncIterator[bytes],
    *,
    limit: int,
    content_type: str = "text/csv",
) -> Stored:
    """Stream ``chunks`` to S3 by multipart upload; memory holds at most one part.

    Over ``limit`` bytes the upload is aborted and PayloadTooLarge raised.
    """
    digest = hashlib.sha256()
    total = 0
    buf = bytearray()
    upload = _Upload(client, uri, content_type)
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(
                    f"The upload is larger than the limit of {limit} bytes",
                    details={"limit_bytes": limit},
                )
            digest.update(chunk)
            buf += chunk
            if len(buf) >= PART_SIZE:
                await upload.part(bytes(buf))
                buf.clear()
        etag = await upload.finish(bytes(buf))
    except BaseException:
        await upload.abort()
        raise
    return Stored(bytes=total, sha256=digest.hexdigest(), etag=etag.strip('"'))


class ObjectInfo(msgspec.Struct):
    size: int
    etag: str


async def head(client: Any, uri: S3Uri) -> ObjectInfo | None:
    """Size and ETag of an object, None when it does not exist."""
    try:
        resp = await client.head_object(Bucket=uri.bucket, Key=uri.key)
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket", "403", "AccessDenied"):
            return None
        raise StorageError(f"S3 answered {code} for {uri}") from exc
    return ObjectInfo(size=int(resp["ContentLength"]), etag=str(resp["ETag"]).strip('"'))


class ObjectChanged(StorageError):
    """The object was replaced or deleted since the run looked at it (If-Match failed)."""


class Part(msgspec.Struct, frozen=True):
    """One part file of a multi-part feed, as listed."""

    key: str
    size: int
    etag: str


MAX_PARTS = 10_000


def is_marker(key: str) -> bool:
    """``_SUCCESS``, ``_manifest.json``, ``.part-0.crc``: what Spark, Hadoop, Hive and most
    exporters write beside their part files; never a part itself."""
    return posixpath.basename(key).startswith(("_", "."))


def completes_a_set(key: str) -> bool:
    """``_SUCCESS`` (Spark, Hadoop, Hive) or ``_manifest…``, both written after every part:
    what a watched multi-part feed runs on. Not ``_started_…`` or ``_committed_…``."""
    name = posixpath.basename(key)
    return name == "_SUCCESS" or name.startswith("_manifest")


async def list_parts(client: Any, pattern: str) -> list[Part]:
    """The part files ``pattern`` names (``s3://b/export/`` or ``s3://b/export/part-*.csv``:
    the objects directly in that folder, matching the glob if any, markers left out), in key
    order; at most MAX_PARTS + 1 (the caller refuses more)."""
    folder = s3_events.fixed_part(pattern)
    uri = parse_s3_uri(folder + "x")
    prefix = uri.key[:-1]
    parts: list[Part] = []
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=uri.bucket, Prefix=prefix, Delimiter="/"):
        for obj in page.get("Contents", []):
            key = str(obj["Key"])
            if is_marker(key) or not s3_events.matches(pattern, uri.bucket, key):
                continue
            parts.append(Part(key, int(obj["Size"]), str(obj["ETag"]).strip('"')))
            if len(parts) > MAX_PARTS:
                return parts
    return sorted(parts, key=lambda p: p.key)


def parts_identity(parts: list[Part]) -> ObjectInfo:
    """One (size, etag) for a set of parts: a run of the same set is a run of the same file
    (its skip, its record); any part added, removed or rewritten makes another."""
    digest = hashlib.md5(usedforsecurity=False)
    for p in parts:
        digest.update(f"{p.key}\t{p.etag}\t{p.size}\n".encode())
    return ObjectInfo(
        size=sum(p.size for p in parts), etag=f"parts-{len(parts)}-{digest.hexdigest()}"
    )


async def read_stream(
    client: Any, uri: S3Uri, *, chunk_size: int = 1024 * 1024, if_match: str | None = None
) -> AsyncIterator[bytes]:
    """Yield the object's bytes in chunks (never the whole object in memory)."""
    kwargs: dict[str, Any] = {"Bucket": uri.bucket, "Key": uri.key}
    if if_match:
        kwargs["IfMatch"] = if_match
    try:
        resp = await client.get_object(**kwargs)
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("412", "PreconditionFailed", "404", "NoSuchKey"):
            raise ObjectChanged(f"{uri} was replaced or deleted while the run read it") from exc
        raise
    body = resp["Body"]
    try:
        while True:
            chunk = await body.read(chunk_size)
            if not chunk:
                break
            yield chunk
    finally:
        body.close()
