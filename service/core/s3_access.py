"""Which S3 objects a tenant may load: the tenant boundary of ``s3_uri``.

A tenant reads its own uploads (``s3://<S3_BUCKET>/tenants/<tenant id>/``) and whatever
prefixes the operator allowed it (``python -m service allow-s3-prefix``); nothing else.
The upload area of other tenants is out of reach even when an allow-list entry would cover
it. Callers answer "not allowed" exactly like "does not exist", so a tenant cannot probe for
other tenants' objects.
"""

from __future__ import annotations

import secrets

from service.core.s3 import S3Uri

UPLOAD_ROOT = "tenants/"
LEGACY_UPLOAD_ROOT = "uploads/"  # uploads before 0003 were keyed by tenant name: never lent


def upload_prefix(bucket: str, tenant_id: int) -> str:
    return f"s3://{bucket}/{UPLOAD_ROOT}{tenant_id}/"


def upload_uri(bucket: str, tenant_id: int, feed_id: str, job_id: str) -> S3Uri:
    """Where an uploaded file version goes; the random part makes keys unguessable."""
    token = secrets.token_urlsafe(16)
    return S3Uri(bucket, f"{UPLOAD_ROOT}{tenant_id}/{feed_id}/{job_id}-{token}.csv")


def plain_key(key: str) -> bool:
    """No empty, ``.`` or ``..`` segments: an HTTP layer may normalise those to another key."""
    return all(part not in ("", ".", "..") for part in key.split("/"))


def may_read(uri: S3Uri, tenant_id: int, upload_bucket: str, allowed: list[str]) -> bool:
    return may_watch(str(uri), tenant_id, upload_bucket, allowed)


def may_watch(fixed: str, tenant_id: int, upload_bucket: str, allowed: list[str]) -> bool:
    """Whether every object at or under ``fixed`` (``s3://bucket/key`` or
    ``s3://bucket/path/``) is one the tenant may read: its own uploads, or one allowed
    prefix."""
    bucket, _, path = fixed[5:].partition("/")
    probe = S3Uri(bucket, f"{path}x" if path.endswith("/") or not path else path)
    if not bucket or not plain_key(probe.key):
        return False
    if bucket == upload_bucket and probe.key.startswith((UPLOAD_ROOT, LEGACY_UPLOAD_ROOT)):
        return fixed.startswith(upload_prefix(upload_bucket, tenant_id))
    return any(fixed.startswith(prefix) for prefix in allowed)


def normalise_prefix(value: str) -> str:
    """An allow-list entry: ``s3://bucket/`` or ``s3://bucket/some/path/``."""
    if not value.startswith("s3://"):
        raise ValueError(f"a prefix looks like s3://bucket/ or s3://bucket/path/, not {value!r}")
    bucket, _, path = value[5:].partition("/")
    if not bucket or (path and not path.endswith("/")) or (path and not plain_key(path[:-1])):
        raise ValueError(
            f"a prefix names a bucket and, optionally, a path ending in '/': {value!r}"
        )
    return f"s3://{bucket}/{path}"
