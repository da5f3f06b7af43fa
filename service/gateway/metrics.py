"""Prometheus metrics of the gateway (one registry per app, so tests can run many apps)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from service.core.store import health as health_store


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "feedjobs_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
        )
        self.jobs = Gauge(
            "feedjobs_jobs",
            "Jobs by type and status",
            ["job_type", "status"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "feedjobs_outbox_backlog", "Outbox rows not yet published", registry=self.registry
        )
        self.rows = Gauge(
            "feedjobs_rows_processed", "Rows read by completed runs", registry=self.registry
        )
        # The labelled child of each (route, method, status) seen, looked up once: labels()
        # costs more than the observation itself, on every request.
        self._children: dict[tuple[str, str, int], Any] = {}
        self.early_polls = _EarlyPolls()
        self.registry.register(self.early_polls)
        self.long_polls = Gauge(
            "feedjobs_long_polls_waiting", "Requests held by ?wait", registry=self.registry
        )
        self.reads = Counter(
            "feedjobs_db_reads",
            "Lists, pages and downloads read, by the server that answered (DATABASE_READ_URL)",
            ["server"],
            registry=self.registry,
        )
        self._read_children = {s: self.reads.labels(s) for s in ("primary", "standby")}
        self.replica_lag = Gauge(
            "feedjobs_replica_lag_seconds",
            "How long ago the primary was where the standby is now",
            registry=self.registry,
        )

    def count_read(self, server: str) -> None:
        self._read_children[server].inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.latency.labels(route, method, str(status))
        child.observe(seconds)

    async def refresh(self, pool: asyncpg.Pool, waiting: int) -> None:
        gauges = await health_store.gauges(pool)
        self.jobs.clear()
        for job_type, status, count in gauges.jobs:
            self.jobs.labels(job_type, status).set(count)
        self.outbox_backlog.set(gauges.outbox_backlog)
        self.rows.set(gauges.rows_read)
        self.long_polls.set(waiting)


class _EarlyPolls(Collector):
    """Polls answered from memory before routing (service/gateway/fastpoll.py): a plain
    count read when scraped, because a client library counter costs more per poll."""

    def __init__(self) -> None:
        self.count = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "feedjobs_http_polls_answered_early",
            "GET /jobs/{id} answered from memory before routing",
            value=self.count,
        )


METRICS = web.AppKey("metrics", Metrics)
