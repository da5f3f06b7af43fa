"""All settings, in one frozen struct, built once from the environment in ``main()``.

Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from service.core.errors import ConfigError


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    database_url: str = "postgresql://postgres@127.0.0.1:5432/feedjobs"
    # A hot standby of DATABASE_URL's server for the gateway's lists, pages and downloads
    # (service/core/replica.py); unset: every read goes to the primary.
    database_read_url: str | None = None
    max_replica_lag_seconds: float = 5.0  # a standby further behind is not read
    replica_wait_seconds: float = 0.2  # a read waits this long for the standby to catch up
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    amqp_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_bucket: str = "feeds"
    s3_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    embedded_s3_port: int = 9000
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_upload_bytes: int = 5 * 1024**3
    max_inflated_bytes: int = 20 * 1024**3
    max_inflate_ratio: int = 200
    max_json_body_bytes: int = 64 * 1024
    max_streams_per_tenant: int = 4  # concurrent CSV downloads of one tenant, per gateway
    stream_send_timeout_seconds: float = 30.0  # a download's client that takes nothing this long
    upload_read_timeout_seconds: float = 60.0  # an upload that sends nothing this long: 408
    # ... and over each such window of waiting for the client, at least this on average
    upload_min_bytes_per_second: int = 1024
    upload_deadline_seconds: float = 3600.0  # an upload's whole time, however fast
    # The gateway renews a receiving upload's lease this often (a third of it); a
    # submission whose lease ran out (its gateway was killed) is failed by the sweeper.
    upload_lease_seconds: float = 30.0
    consumer_concurrency: int = 2
    consumer_metrics_port: int = 9101  # the consumer's /metrics, /healthz, /readyz; 0 = off
    fast_path: bool = True  # parse worker: clean blocks straight to COPY (consumer/fastpath.py)
    # Recognise unchanged rows in the parse worker (consumer/load.py); false: the staged path
    recognise_rows: bool = True
    # Record what each run changed, row by row (GET /jobs/{id}/changes, /feeds/{id}/changes)
    record_changes: bool = True
    lease_seconds: int = 30
    # A run with no chunk of its file and no frame of its worker this long, while its
    # PostgreSQL backend has nothing to do, is stuck: stopped and re-queued (an
    # interruption, so MAX_INTERRUPTIONS bounds it).
    run_stall_seconds: float = 120.0
    max_attempts: int = 3  # lost consumers per run request before WORKER_LOST
    max_interruptions: int = 10  # dependency interruptions per run request before INTERRUPTED
    shutdown_grace_seconds: int = 20
    sweep_interval_seconds: float = 10.0
    requeue_after_seconds: int = 60
    outbox_poll_seconds: float = 5.0
    scheduler_tick_seconds: float = 1.0  # how often the active scheduler looks for due runs
    retention_days: int = 30  # rejections and run history of older runs are deleted
    keep_file_versions: int = 3  # uploaded file versions kept per feed (older ones deleted)
    retention_interval_seconds: float = 300.0  # how often the active scheduler prunes
    rate_limit_per_second: float = 200.0
    rate_limit_burst: int = 400
    bad_key_rate_per_second: float = 5.0  # failed API-key attempts per client address
    bad_key_burst: int = 20
    db_pool_max: int = 10
    connect_retries: int = 0  # start-up tries of PostgreSQL; 0: wait as long as it takes
    # Webhooks (service/core/webhooks.py, consumer/webhooks.py)
    # Hosts or CIDRs a webhook URL may resolve to although private, loopback or link-local
    # (comma-separated; empty: only public addresses).
    webhook_allowed_hosts: str = ""
    # Seconds between a delivery's attempts, after the first (jittered ±10%): about 3 days.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,50400,72000,86400"
    webhook_connect_timeout_seconds: float = 5.0
    webhook_timeout_seconds: float = 15.0  # one attempt, connect to the last byte read
    webhook_concurrency: int = 32  # attempts in flight, per consumer
    webhook_in_flight_per_endpoint: int = 4  # so one slow endpoint holds at most this many
    webhook_poll_seconds: float = 0.5
    webhook_secret_grace_seconds: int = 86400  # a rotated secret still signs this long
    demo_api_key: str | None = None
    dev_data_dir: str = ".data"  # make run: where the embedded S3's objects are kept

    def __post_init__(self) -> None:
        nodes = broker_nodes(self.amqp_url)
        if not nodes or not all(n.startswith(("amqp://", "amqps://")) for n in nodes):
            raise ValueError(
                "AMQP_URL must be one amqp:// or amqps:// URL, or several comma-separated"
                " (the nodes of one cluster)"
            )


def broker_nodes(amqp_url: str) -> list[str]:
    """The broker nodes ``AMQP_URL`` names: one URL, or several comma-separated (the nodes
    of one cluster, in any order)."""
    return [u.strip() for u in amqp_url.split(",") if u.strip()]


# Environment variable -> field; every field is reachable by its upper-case name.
ENV_NAMES: dict[str, str] = {f.upper(): f for f in Settings.__struct_fields__}
_UNITS: dict[str, Any] = {}


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Build settings from an environment mapping; a bad value fails with one clear line.

    Only variables named like a setting are read; others are ignored (the environment holds
    many unrelated variables).  Empty strings count as unset.
    """
    raw: dict[str, Any] = {}
    for env_name, field in ENV_NAMES.items():
        value = environ.get(env_name)
        if value is None or value == "":
            continue
        raw[field] = value
    raw.update(overrides)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.http_port`": name the variable instead.
        text = str(exc)
        if "`$." not in text:  # a rule across fields (__post_init__) names its own
            raise ConfigError(f"invalid setting: {text}") from exc
        name = text.split("`$.", 1)[1].split("`", 1)[0].upper()
        text = text.split(" - at ", 1)[0]
        raise ConfigError(f"invalid setting {name}: {text}") from exc
