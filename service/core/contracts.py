"""msgspec structs of every HTTP body and AMQP message (and so of the OpenAPI document)."""

from __future__ import annotations

import base64
import typing
from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec import Meta, Raw, Struct

from service.core import ids
from service.core.product import NAMES, PRODUCT

Mode = Literal["upsert", "snapshot"]
Delimiter = Literal[",", ";", "\t", "|"]
# consumer/transcode.py: the text encodings a feed's files may come in
Encoding = Literal["utf-8", "utf-16", "windows-1252", "iso-8859-1", "auto"]
ENCODINGS: tuple[str, ...] = ("utf-8", "utf-16", "windows-1252", "iso-8859-1", "auto")
# A feed's header mapping, {"their header": "our column"} (consumer/validate.py).
ColumnName = Literal[NAMES]  # type: ignore[valid-type]
HeaderName = Annotated[str, Meta(min_length=1, max_length=200)]
ColumnMap = Annotated[dict[HeaderName, ColumnName], Meta(max_length=200)]
# What becomes of a column that maps to no product column: kept as an attribute, ignored,
# or the run fails (UNKNOWN_COLUMNS).
UnknownColumns = Literal["keep", "ignore", "reject"]
UNKNOWN_POLICIES: tuple[str, ...] = ("keep", "ignore", "reject")
# A feed's tags (its jobs inherit them): GET /feeds?tag=, GET /jobs?tag=.
TAG = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
Tag = Annotated[str, Meta(pattern=TAG)]
Tags = Annotated[list[Tag], Meta(max_length=20)]
MAX_TAGS = 20
MAX_DESCRIPTION = 2000
Description = Annotated[str, Meta(max_length=MAX_DESCRIPTION)]
JobStatus = Literal["created", "queued", "running", "completed", "failed", "cancelled"]
JobType = Literal["submission", "validation"]
JOB_STATUSES: tuple[str, ...] = ("created", "queued", "running", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")

NonNegative = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Ratio = Annotated[float, Meta(ge=0.0, le=1.0)]
DEFAULT_MAX_DELETED_RATIO = 0.5
# RFC 3339 UTC, as PostgreSQL's rfc3339() writes it: a string, declared as such in OpenAPI.
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
# Ids and correlation ids as they may arrive from outside (AMQP): anything else (a NUL, a
# megabyte of text) is refused at decoding, before it can reach PostgreSQL or a log line.
JobIdText = Annotated[str, Meta(pattern=r"^J[SV][0-9]{5,18}$")]
FeedIdText = Annotated[str, Meta(pattern=r"^FD[0-9]{5,18}$")]
CorrelationId = Annotated[str, Meta(pattern=ids.CORRELATION_ID)]

# Why a job (``jobs.error``) or one run of it (``job_runs.error``) ended without success.
JOB_ERROR_CODES: dict[str, str] = {
    "MISSING_COLUMNS": "the header lacks a required column; nothing was loaded",
    "INVALID_HEADER": "the header line cannot be read (bad bytes, NUL, unterminated quote)",
    "DECOMPRESSION_LIMIT": "the gzip file inflates past MAX_INFLATED_BYTES or MAX_INFLATE_RATIO",
    "TOO_MANY_REJECTED_ROWS": "more rejected rows than max_rejected_rows; nothing was written",
    "EMPTY_SNAPSHOT": "a snapshot with no valid row, which would delete the whole feed",
    "INVALID_ENCODING": "the file cannot be decoded in its encoding (only utf-16 can fail so)",
    "AMBIGUOUS_COLUMNS": "two header fields map to one column (details.ambiguous names them)",
    "UNKNOWN_COLUMNS": "header fields that map to no column, with unknown_columns = reject",
    "TOO_MANY_ATTRIBUTES": "more attribute columns than the limit (200)",
    "INVALID_ATTRIBUTE_NAME": "an attribute column's name is longer than 100 characters",
    "TOO_MANY_DELETIONS": "a snapshot that would delete more than max_deleted_ratio of the"
    " feed's live products; nothing was written",
    "FILE_NOT_FOUND": "the feed's object does not exist, or the tenant may not read it",
    "FILE_CHANGED": "the file (or one of its parts) was replaced or deleted while the run read"
    " it; nothing was written",
    "TOO_MANY_PARTS": "a multi-part feed's pattern matches more than 10,000 part files",
    "FEED_NOT_READY": "the feed has no stored file (its first upload failed or is under way)",
    "CANCELLED": "cancelled by a client; nothing was written",
    "WORKER_LOST": "MAX_ATTEMPTS consumers running this run request stopped renewing its lease",
    "INTERRUPTED": "a dependency (PostgreSQL, S3) interrupted this run request too often",
    "PARSE_FAILED": "the parse worker process died before the end of the file",
    "INTERNAL_ERROR": "a bug; the load was rolled back and the log has the traceback",
    # Of one run in /runs only: the job itself went on.
    "ABANDONED": "the consumer shut down mid-run; the run was rolled back and re-queued",
    "STALLED": "the run made no progress for RUN_STALL_SECONDS; rolled back and re-queued",
    # Of submission (JS) jobs: the upload did not complete, so no file version was stored.
    "UPLOAD_FAILED": "the upload broke off (client disconnect, storage error)",
    "PAYLOAD_TOO_LARGE": "the upload exceeded MAX_UPLOAD_BYTES",
    "REQUEST_TIMEOUT": "the client sent no body bytes for UPLOAD_READ_TIMEOUT_SECONDS",
}
# Why a row was rejected (docs/feed-format.md): a column's rule, or a fault of the record.
RowErrorCode = Literal[
    "INVALID_SKU",
    "DUPLICATE_SKU",
    "INVALID_NAME",
    "INVALID_DESCRIPTION",
    "INVALID_PRICE",
    "INVALID_CURRENCY",
    "INVALID_QUANTITY",
    "INVALID_CATEGORY",
    "INVALID_BRAND",
    "INVALID_GTIN",
    "INVALID_TIMESTAMP",
    "INVALID_BOOLEAN",
    "ATTRIBUTE_TOO_LONG",
    "ROW_LENGTH",
    "INVALID_CHARACTER",
    "INVALID_ENCODING",
    "FIELD_TOO_LARGE",
    "UNTERMINATED_QUOTE",
]
JobErrorCode = Literal[
    "MISSING_COLUMNS",
    "INVALID_HEADER",
    "DECOMPRESSION_LIMIT",
    "TOO_MANY_REJECTED_ROWS",
    "EMPTY_SNAPSHOT",
    "INVALID_ENCODING",
    "AMBIGUOUS_COLUMNS",
    "UNKNOWN_COLUMNS",
    "TOO_MANY_ATTRIBUTES",
    "INVALID_ATTRIBUTE_NAME",
    "TOO_MANY_DELETIONS",
    "FILE_NOT_FOUND",
    "FILE_CHANGED",
    "TOO_MANY_PARTS",
    "FEED_NOT_READY",
    "CANCELLED",
    "WORKER_LOST",
    "INTERRUPTED",
    "PARSE_FAILED",
    "INTERNAL_ERROR",
    "ABANDONED",
    "STALLED",
    "UPLOAD_FAILED",
    "PAYLOAD_TOO_LARGE",
    "REQUEST_TIMEOUT",
]


def job_error_code(code: str, default: JobErrorCode) -> JobErrorCode:
    """``code`` where it is a documented job error code, else ``default``."""
    return cast(JobErrorCode, code) if code in JOB_ERROR_CODES else default


class ErrorBody(Struct, omit_defaults=False):
    error_code: str
    message: str
    detail: str
    details: dict[str, Any] = {}


class RunOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of one run; unset fields fall back to the feed's defaults."""

    mode: Mode | None = None
    max_rejected_rows: NonNegative | None = None
    max_deleted_ratio: Ratio | None = None
    encoding: Encoding | None = None
    columns: ColumnMap | None = None
    unknown_columns: UnknownColumns | None = None
    dry_run: bool = False
    force: bool = False


class EffectiveOptions(Struct, kw_only=True):
    """The options a run actually ran with (stored with the run, shown by /runs)."""

    mode: Mode
    max_rejected_rows: int | None
    dry_run: bool
    force: bool
    delimiter: str
    # Runs stored before the option existed ran with no such guard; read back as the default.
    max_deleted_ratio: float = DEFAULT_MAX_DELETED_RATIO
    encoding: str = "utf-8"
    columns: dict[str, str] = {}
    unknown_columns: str = "keep"


class RunRequest(Struct, kw_only=True):
    """An AMQP run request: from the gateway's outbox, the sweeper, or upstream services.

    ``attempt`` is set by feedjobs itself: it names the queued run the message wakes, so a
    duplicate delivery can never start a second run.
    """

    job_id: JobIdText | None = None
    feed_id: FeedIdText | None = None
    options: RunOptions | None = None
    request_id: CorrelationId | None = None
    attempt: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None


class ScheduleBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """``PUT /feeds/{id}/schedule``: a cron expression (in ``timezone``) or a fixed interval,
    and the options of the runs it requests (unset ones fall back to the feed's)."""

    cron: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    every_seconds: Annotated[int, Meta(ge=1, le=366 * 86400)] | None = None
    mode: Mode | None = None
    max_rejected_rows: NonNegative | None = None
    dry_run: bool = False
    force: bool = False


class ScheduleView(Struct):
    cron: str | None
    timezone: str
    every_seconds: int | None
    options: RunOptions
    next_run_at: Timestamp
    last_run_at: Timestamp | None


class RegisterFeed(Struct, forbid_unknown_fields=True, kw_only=True):
    s3_uri: str
    name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    mode: Mode = "upsert"
    delimiter: Delimiter = ","
    max_rejected_rows: NonNegative | None = None
    max_deleted_ratio: Ratio = DEFAULT_MAX_DELETED_RATIO
    encoding: Encoding = "utf-8"
    columns: ColumnMap = {}
    unknown_columns: UnknownColumns = "keep"
    description: Description | None = None
    tags: Tags = []
    # Load every new object version that arrives there (S3 event notifications): s3_uri is
    # then an exact key, or a prefix ending in '/' with an optional glob (s3://b/in/*.csv).
    watch: bool = False
    # s3_uri names the part files of one version (a prefix ending in '/', or a glob in its
    # last segment: s3://b/export/part-*.csv.gz), loaded together as one file; with watch,
    # once per complete set (its _SUCCESS or _manifest object).
    parts: bool = False


class UpdateFeed(Struct, forbid_unknown_fields=True, kw_only=True):
    """PATCH /feeds/{id}: the fields given are set (``description: null`` clears it)."""

    name: Annotated[str, Meta(min_length=1, max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    tags: Tags | msgspec.UnsetType = msgspec.UNSET


class FeedCreated(Struct):
    feed_id: str
    submission_job_id: str
    validation_job_id: str


FeedStatus = Literal["receiving", "ready", "upload_failed"]
FEED_STATUSES: tuple[str, ...] = ("receiving", "ready", "upload_failed")


class FeedSummary(Struct):
    """A feed as ``GET /feeds`` lists it (``GET /feeds/{id}`` adds ``product_count``)."""

    feed_id: str
    name: str
    status: FeedStatus
    s3_uri: str
    mode: str
    delimiter: str
    created_at: Timestamp
    validation_job_id: str
    submission_job_id: str
    last_loaded_at: Timestamp | None
    max_rejected_rows: int | None
    max_deleted_ratio: float
    encoding: str
    columns: dict[str, str]
    unknown_columns: str
    description: str | None
    tags: list[str]
    watch: str | None  # the S3 key or prefix whose new versions the feed loads


class FeedView(FeedSummary):
    """A feed as ``GET /feeds/{id}`` shows it."""

    product_count: int
    schedule: ScheduleView | None = None
    next_run_at: Timestamp | None = None


class FeedList(Struct, omit_defaults=True):
    feeds: list[FeedSummary]
    next_cursor: str | None
    total: int | None = None  # with include_total=true: every match, not just this page


class JobView(Struct):
    job_id: str
    feed_id: str
    job_type: JobType
    status: JobStatus
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    attempt: int
    message: str | None
    progress: Raw | None
    retry_after: int | None
    result: Raw | None
    error: Raw | None


class JobList(Struct, omit_defaults=True):
    jobs: list[JobView]
    next_cursor: str | None
    total: int | None = None  # with include_total=true: every match, not just this page


class RunAccepted(Struct):
    job_id: str
    status: Literal["queued"]
    attempt: int


class RunView(Struct):
    attempt: int
    status: JobStatus
    requested_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    requested_by: str
    options: Raw
    result: Raw | None
    error: Raw | None


class RunList(Struct):
    job_id: str
    runs: list[RunView]


class RowError(Struct):
    line: int
    column: str | None
    code: RowErrorCode
    message: str
    raw: str


class ErrorList(Struct):
    job_id: str
    attempt: int
    errors: list[RowError]
    next_cursor: str | None


class FirstError(Struct):
    line: int
    column: str | None
    code: str
    message: str


class Issue(Struct, kw_only=True):
    """One (code, column) of a run's rejections or warnings, rolled up (consumer/issues.py)."""

    code: str
    column: str | None
    severity: Literal["error", "warning"]
    count: int  # rows it touched (for a header's column: the rows read)
    lines: list[int]  # the first few
    message: str  # the first one
    docs: str  # where docs/feed-format.md explains the code


class FileResult(Struct):
    """One part file of a multi-part feed's run."""

    key: str  # s3://bucket/key
    bytes: int
    rows_read: int
    rows_rejected: int
    # Its header's line: lines are numbered through the parts in key order, as if they were
    # one file (each part's header counted), so its line n is first_line + n - 1.
    first_line: int


class ValidationResult(Struct, kw_only=True):
    rows_read: int
    rows_valid: int
    rows_rejected: int
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    bytes_read: int
    file_unchanged: bool
    ignored_columns: list[str]
    first_error: FirstError | None
    duration_ms: int
    dry_run: bool = False
    # Where every rejection of this run can be downloaded (as CSV with Accept: text/csv).
    rejections_url: str | None = None
    # What this run inserted, updated, revived and deleted, sku by sku (when it changed any).
    changes_url: str | None = None
    # The file's encoding as decoded: the feed's or the run's, or what ``auto`` found.
    encoding: str | None = None
    # Which header field was read as which product column, and which were kept as the
    # products' attributes.
    columns: dict[str, str] | None = None
    attributes: list[str] | None = None
    # Rejections (errors) and warnings per (code, column), errors first.
    issues: list[Issue] | None = None
    # A multi-part feed's parts, in key order (None: a feed of one file).
    files: list[FileResult] | None = None


# A feed's product as the API shows it: declared by the column registry.
Product = PRODUCT.api_struct()


class ProductList(Struct):
    products: list[Product]  # type: ignore[valid-type]
    next_cursor: str | None


# What runs changed (service/core/store/changes.py; docs/api.md, "Changes").
ChangeKind = Literal["inserted", "updated", "revived", "deleted"]


class ChangeCounts(Struct):
    inserted: int
    updated: int  # revived ones not included
    revived: int
    deleted: int


class RunChange(Struct, omit_defaults=True):
    sku: str
    change: ChangeKind
    # updated or revived: the columns, and attributes.<key>, whose values differ
    columns: list[str] | None = None


class RunChangeList(Struct, kw_only=True):
    job_id: str
    run: int
    status: str  # the run's: changes show once it has completed
    counts: ChangeCounts
    next_cursor: str | None
    changes: list[RunChange]


class FeedChange(Struct, kw_only=True, omit_defaults=True):
    cursor: str  # the position past this change: ?since= it reads on from here
    job_id: str
    run: int
    sku: str
    change: ChangeKind
    product: Product  # type: ignore[valid-type]  # as it is now (deleted_at set if deleted)
    columns: list[str] | None = None


class FeedChangeList(Struct, kw_only=True):
    feed_id: str
    since: str
    next_cursor: str  # the position past the last change here (since, if none)
    more: bool  # more changes wait after next_cursor: ask again at once
    changes: list[FeedChange]


# Webhooks (service/core/webhooks.py): the status events an endpoint may ask for.
WebhookEvent = Literal[
    "job.queued", "job.running", "job.completed", "job.failed", "job.cancelled", "feed.changed"
]
WEBHOOK_EVENTS: tuple[str, ...] = (
    "job.queued",
    "job.running",
    "job.completed",
    "job.failed",
    "job.cancelled",
    "feed.changed",
)
WebhookIdText = Annotated[str, Meta(pattern=r"^WH[0-9]{5,18}$")]


class CreateWebhook(Struct, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, Meta(min_length=1, max_length=2000)]
    events: Annotated[list[WebhookEvent], Meta(min_length=1, max_length=10)]
    feed_ids: Annotated[list[FeedIdText], Meta(min_length=1, max_length=100)] | None = None


class WebhookView(Struct, kw_only=True):
    webhook_id: str
    url: str
    events: list[str]
    feed_ids: list[str] | None
    created_at: Timestamp
    disabled_at: Timestamp | None
    disabled_reason: str | None  # why it was disabled (410, or the whole retry schedule failed)
    previous_secret_valid_until: Timestamp | None


class WebhookCreated(WebhookView, kw_only=True):
    secret: str  # whsec_...: shown once


class WebhookList(Struct):
    webhooks: list[WebhookView]


class SecretRotated(Struct):
    webhook_id: str
    secret: str  # the new one, shown once
    previous_secret_valid_until: Timestamp  # both sign until then


class DeliveryView(Struct, kw_only=True):
    delivery_id: str  # the webhook-id header of every attempt
    event_type: str
    job_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: Timestamp
    next_attempt_at: Timestamp | None  # while pending
    delivered_at: Timestamp | None
    last_status: int | None  # the receiver's HTTP status
    last_error: str | None
    last_latency_ms: int | None


class DeliveryList(Struct):
    deliveries: list[DeliveryView]
    next_cursor: str | None


class DeliveryQueued(Struct):
    delivery_id: str
    status: str


class SubmissionResult(Struct):
    """What a submission job stored: an upload's size and SHA-256, or a registered object's
    size and ETag (its SHA-256 is not known without reading it)."""

    bytes: int
    sha256: str | None
    s3_uri: str
    etag: str | None = None


class JobError(Struct):
    code: JobErrorCode
    message: str
    details: dict[str, Any] = {}


class Progress(Struct):
    rows_read: int
    bytes_read: int
    bytes_total: int | None
    percent: float | None


class JobState(Struct):
    """What a job's status event and its webhook delivery both tell."""

    job_id: str
    feed_id: str
    job_type: JobType
    status: JobStatus
    attempt: int
    result: Raw | None
    error: Raw | None


class StatusEvent(JobState):
    """A ``job.<status>`` event on jobs.events, as sql/0001_init.sql's trigger writes it."""

    occurred_at: str


class JobLinks(Struct):
    job: str
    errors: str
    changes: str  # the run's change list (?run=<attempt>)
    products: str


class JobHookData(JobState):
    links: JobLinks


class JobHook(Struct):
    """A ``job.<status>`` webhook delivery's body (sql/0015_product_changes.sql's trigger)."""

    type: WebhookEvent
    timestamp: str
    data: JobHookData


class WebhookTestData(Struct):
    webhook_id: str


class WebhookTest(Struct):
    """A ``webhook.test`` delivery's body (``POST /webhooks/{id}/test``)."""

    type: Literal["webhook.test"]
    timestamp: str
    data: WebhookTestData


# The x-error-code of a message refused to jobs.run.dead (consumer/messages.py's DeadLetter).
DeadLetterCode = Literal[
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "MESSAGE_TOO_LARGE",
    "UNKNOWN_JOB",
    "UNKNOWN_FEED",
    "JOB_NOT_RUNNABLE",
    "FEED_NOT_READY",
    "INVALID_EVENT",  # an S3 event document that does not fit (jobs.s3events)
    "INTERNAL_ERROR",
]
DEAD_LETTER_CODES: tuple[str, ...] = typing.get_args(DeadLetterCode)


class ChangeLinks(Struct):
    changes: str  # the run's change list
    feed_changes: str  # the feed's change feed, from just before this run's first change


class FeedChanged(Struct, kw_only=True):
    """What a run changed in its feed: ``updated`` excludes ``revived`` (the job's result
    counts them together); ``?since=cursor_from`` on the change feed reads from this run's
    first change, ``cursor_to`` is the position past its last."""

    feed_id: str
    job_id: str
    run: int
    inserted: int
    updated: int
    revived: int
    deleted: int
    cursor_from: str
    cursor_to: str
    links: ChangeLinks


class FeedChangedEvent(FeedChanged, kw_only=True):
    """A ``feed.changed`` event on jobs.events (sql/0015_product_changes.sql writes it)."""

    occurred_at: str


class FeedChangedHook(Struct):
    """A ``feed.changed`` webhook delivery's body (Standard Webhooks' envelope)."""

    type: Literal["feed.changed"]
    timestamp: str
    data: FeedChanged


json_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    return json_encoder.encode(obj)


def encode_cursor(values: Any) -> str:
    """An opaque cursor (URL-safe base64 of JSON): what a page's ``next_cursor`` holds."""
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode().rstrip("=")
