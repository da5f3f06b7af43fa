"""The consumer's own Prometheus metrics, served on CONSUMER_METRICS_PORT (``/metrics``,
plus ``/healthz`` and ``/readyz`` for orchestrators). One registry per consumer."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.core.contracts import ValidationResult
from service.core.logs import get_logger

log = get_logger(__name__)
ROW_KINDS = ("inserted", "updated", "unchanged", "deleted", "rejected")


class ConsumerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        count = self._counter
        self.runs = count(
            "feedjobs_runs",
            "Runs that ended here, by outcome (completed, failed, cancelled, lease_lost,"
            " interrupted)",
            "outcome",
        )
        self.duration = Histogram(
            "feedjobs_run_duration_seconds",
            "Wall time of a run, by outcome",
            ["outcome"],
            registry=self.registry,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.rows = count(
            "feedjobs_rows",
            "Rows of completed runs, by kind (inserted, updated, unchanged, deleted, rejected)",
            "kind",
        )
        self.dead_letters = count(
            "feedjobs_dead_letters", "Messages refused to jobs.run.dead, by x-error-code", "code"
        )
        self.s3_events = count(
            "feedjobs_s3_events",
            "Object versions from S3 events, by outcome (loaded, pending, stale, unwatched, part)",
            "outcome",
        )
        self.webhook_deliveries = count(
            "feedjobs_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            "outcome",
        )
        self.webhook_latency = Histogram(
            "feedjobs_webhook_attempt_seconds",
            "Wall time of a webhook delivery attempt",
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
        )
        self.webhook_backlog = Gauge(
            "feedjobs_webhook_backlog", "Webhook deliveries pending", registry=self.registry
        )
        self.active = Gauge("feedjobs_runs_active", "Runs in hand", registry=self.registry)
        self.amqp_up = Gauge(
            "feedjobs_amqp_connected", "1 while consuming from the broker", registry=self.registry
        )

    def _counter(self, name: str, doc: str, label: str) -> Counter:
        return Counter(name, doc, [label], registry=self.registry)

    def run_ended(self, outcome: str, seconds: float) -> None:
        self.runs.labels(outcome).inc()
        self.duration.labels(outcome).observe(seconds)

    def rows_loaded(self, result: ValidationResult) -> None:
        for kind in ROW_KINDS:
            count = result.rows_rejected if kind == "rejected" else getattr(result, kind)
            if count:
                self.rows.labels(kind).inc(count)


async def serve(
    metrics: ConsumerMetrics, host: str, port: int, ready: Callable[[], bool]
) -> web.AppRunner | None:
    """Serve /metrics, /healthz, /readyz; None (logged) if the port cannot be had: metrics
    are never a reason for a consumer not to consume."""

    async def metrics_route(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ok = ready()
        return web.json_response(
            {"status": "ready" if ok else "unavailable"}, status=200 if ok else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.error("consumer_metrics_unavailable", port=port, error=str(exc))
        await runner.cleanup()
        return None
    log.info("consumer_metrics_serving", host=host, port=port)
    return runner
