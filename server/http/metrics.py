"""Prometheus metrics, in a registry of the app's own (several apps may share a process).

Counters and histograms are updated as things happen; gauges of the service's
state (queue depths, articles and accounts per version, readiness) are read from
the service at scrape time by a collector, so they cannot drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import NotReady
from server.inference.compute_gate import Lane
from server.service import RecommendationService

UNMATCHED_ROUTE = "<unmatched>"  # one label for every unknown path: bounded cardinality
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
WATCH_ALIVE_HELP = "1 while this process watches the model repository for new versions"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kbrec_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kbrec_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "kbrec_batch_size",
            "rows per backend call",
            ["lane"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "kbrec_batch_duration_seconds",
            "seconds per backend call, ranking included for queries",
            ["lane"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embedded_rows = Counter(
            "kbrec_embedded_rows",
            "texts embedded by the backend",
            ["lane"],
            registry=self.registry,
        )
        self.feed_delay = Histogram(
            "kbrec_change_feed_delay_seconds",
            "from a store change's commit (in any process) to its application here",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "kbrec_event_loop_lag_seconds",
            "how late the event loop ran a timer that was due (server/http/loop_lag.py)",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        # Per experiment arm (experiment ids are few: one runs at a time).
        self.arm_requests = Counter(
            "kbrec_experiment_requests",
            "requests answered by an experiment's arm",
            ["experiment_id", "arm"],
            registry=self.registry,
        )
        self.arm_feedback = Counter(
            "kbrec_experiment_feedback",
            "feedback events recorded about an experiment's requests, by arm and event",
            ["experiment_id", "arm", "event"],
            registry=self.registry,
        )
        # Label children by label values; bounded: methods, route templates, statuses.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._batch_children: dict[Lane, tuple[Any, Any, Any]] = {}
        self._arm_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:  # label lookups cost more than the update: do them once
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._request_children[key] = children
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def observe_batch(self, lane: Lane, rows: int, seconds: float) -> None:
        children = self._batch_children.get(lane)
        if children is None:
            children = (
                self.batch_size.labels(lane.value),
                self.batch_seconds.labels(lane.value),
                self.embedded_rows.labels(lane.value),
            )
            self._batch_children[lane] = children
        size, duration, embedded = children
        size.observe(rows)
        duration.observe(seconds)
        embedded.inc(rows)

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def observe_feed_delay(self, seconds: float) -> None:
        self.feed_delay.observe(seconds)

    def observe_arm_request(self, experiment_id: str, arm: str) -> None:
        child = self._arm_children.get((experiment_id, arm))
        if child is None:
            child = self._arm_children[(experiment_id, arm)] = self.arm_requests.labels(
                experiment_id, arm
            )
        child.inc()

    def observe_feedback(self, experiment_id: str, arm: str, event: str) -> None:
        self.arm_feedback.labels(experiment_id, arm, event).inc()

    def watch(self, service: RecommendationService) -> None:
        self.registry.register(ServiceCollector(service))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ServiceCollector(Collector):
    def __init__(self, service: RecommendationService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("kbrec_queue_depth", "rows waiting for a batch", labels=["lane"])
        for lane, rows in self._service.queue_depths().items():
            depth.add_metric([lane.value], rows)
        yield depth
        # Totals per model version: a series per account would grow with the accounts.
        totals: dict[int, list[int]] = {}
        for _, version, count in self._service.article_counts():
            total = totals.setdefault(version, [0, 0])
            total[0] += count
            total[1] += 1
        articles = GaugeMetricFamily(
            "kbrec_articles", "indexed articles per model version", labels=["model_version"]
        )
        accounts = GaugeMetricFamily(
            "kbrec_accounts",
            "accounts with indexed articles per model version",
            labels=["model_version"],
        )
        for version, (count, account_count) in sorted(totals.items()):
            articles.add_metric([str(version)], count)
            accounts.add_metric([str(version)], account_count)
        yield articles
        yield accounts
        yield GaugeMetricFamily(
            "kbrec_ready", "1 when the model is loaded and the index built", self._service.ready
        )
        yield GaugeMetricFamily(
            "kbrec_leader", "1 in the process that leads model changes", self._service.leader
        )
        yield GaugeMetricFamily(
            "kbrec_change_seq",
            "last change of the store's log applied by this process",
            self._service.applied_change_seq,
        )
        active = GaugeMetricFamily("kbrec_active_model_version", "model version serving queries")
        if self._service.active_version is not None:
            active.add_metric([], self._service.active_version)
        yield active
        yield from self._recommendation_log_metrics()
        yield from self._lifecycle_metrics()

    def _recommendation_log_metrics(self) -> Iterator[Metric]:
        try:
            recommendation_log = self._service.experiments.log
        except NotReady:
            return
        if recommendation_log is None:
            return
        stats = recommendation_log.stats
        yield CounterMetricFamily(
            "kbrec_recommendation_log_written", "requests written to the log", stats.written
        )
        yield CounterMetricFamily(
            "kbrec_recommendation_log_dropped",
            "requests not logged: the queue was full (the store was too slow or failing)",
            stats.dropped,
        )
        yield GaugeMetricFamily(
            "kbrec_recommendation_log_pending",
            "requests waiting to be written",
            recommendation_log.pending,
        )

    def _lifecycle_metrics(self) -> Iterator[Metric]:
        try:
            lifecycle = self._service.lifecycle
        except NotReady:
            yield GaugeMetricFamily("kbrec_repository_watch_alive", WATCH_ALIVE_HELP, 0)
            return
        # Only the leader watches: alert when no process of a deployment reports 1.
        yield GaugeMetricFamily(
            "kbrec_repository_watch_alive", WATCH_ALIVE_HELP, lifecycle.watch_alive
        )
        last_check = GaugeMetricFamily(
            "kbrec_repository_last_check_timestamp_seconds",
            "Unix time the last check of the model repository completed (the leader's)",
        )
        if lifecycle.last_check_at is not None:
            last_check.add_metric([], lifecycle.last_check_at)
        yield last_check
        states = GaugeMetricFamily(
            "kbrec_model_version_state",
            "1 for each model version's current state (active, candidate, previous, ...)",
            labels=["model_version", "state"],
        )
        for number, state, _, _ in lifecycle.version_states():
            states.add_metric([str(number), state], 1)
        yield states
        yield CounterMetricFamily(
            "kbrec_model_switches", "switches of the active version", lifecycle.live.switches
        )
        remaining = GaugeMetricFamily(
            "kbrec_upgrade_articles_remaining",
            "articles still to re-embed before the candidate version switches in",
            labels=["model_version"],
        )
        rate = GaugeMetricFamily(
            "kbrec_upgrade_articles_per_second",
            "re-embedding throughput of the running upgrade",
            labels=["model_version"],
        )
        upgrade = lifecycle.upgrade
        if upgrade is not None:
            remaining.add_metric([str(upgrade.number)], upgrade.progress.remaining)
            rate.add_metric([str(upgrade.number)], upgrade.progress.articles_per_s())
        yield remaining
        yield rate


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template ("/v1/accounts/{…}")."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, route_templates: Mapping[Callable[..., Any], str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.route_templates = route_templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before responding

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            # The router put the matched endpoint into the (shared) scope.
            route = self.route_templates.get(scope.get("endpoint"), UNMATCHED_ROUTE)
            self.metrics.observe_request(
                scope["method"], route, status, time.perf_counter() - started
            )
