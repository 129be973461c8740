"""Prometheus metrics of one app instance (its own registry): requests, upstream calls, usage,
error codes. deploy/prometheus/alerts.yml and deploy/grafana/ are written against these."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from tabpfn_gateway.errors import GatewayError
from tabpfn_gateway.gateway import UpstreamCall, UsageRecorder

if TYPE_CHECKING:
    from tabpfn_gateway.governance import BudgetUsage, PolicyEngine

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

logger = logging.getLogger(__name__)

#: At most this many budgets appear in ``tabpfn_gateway_budget_used_ratio`` (the most used).
MAX_BUDGET_SERIES = 100
_BUDGET_RATIO = "tabpfn_gateway_budget_used_ratio"
_BUDGET_RATIO_HELP = (
    "Spend settled this period over the budget (in its unit), per budget (level: key, user "
    f"or team; target: its key id or principal id); the {MAX_BUDGET_SERIES} most used budgets."
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

# Key ids get their own series up to this many per process; later ones are counted together
# under OTHER_KEYS, so a gateway handing out many keys cannot grow the scrape without bound.
MAX_KEY_ID_LABELS = 100
OTHER_KEYS = "other"

# The method label: these, else "other" (a client may send any token as its method).
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_REQUEST_SERIES = 10_000


class GatewayMetrics:
    """The server's metrics. Labels are route templates (never raw paths: upload paths carry
    sealed tokens) and public key ids (never keys; at most ``max_key_ids`` of them, the rest
    as ``other``)."""

    def __init__(self, *, max_key_ids: int = MAX_KEY_ID_LABELS) -> None:
        self._max_key_ids = max_key_ids
        self._key_ids: set[str] = set()
        # A registry per app, so several apps in one process (tests, replicas) do not collide.
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tabpfn_gateway_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tabpfn_gateway_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ("route", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_calls = Counter(
            "tabpfn_gateway_operations",
            "Metered gateway operations (upstream calls and uploads), by operation, key id "
            f"(the first {max_key_ids} seen, then 'other') and status.",
            ("operation", "key_id", "status"),
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "tabpfn_gateway_operation_duration_seconds",
            "Time of metered operations including the upstream call, by operation.",
            ("operation",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Named for the operations guide's alert rules; labels are bounded (no key ids).
        self.budget_alerts = Counter(
            "tabpfn_gateway_budget_alerts",
            "Budget alert thresholds crossed (once per budget, period and threshold).",
            ("threshold",),
            registry=self.registry,
        )
        self.policy_refusals = Counter(
            "tabpfn_gateway_policy_refusals",
            "Calls refused by a governance policy, by error code (429s and 403s).",
            ("error_code",),
            registry=self.registry,
        )
        self.usage_written = Counter(
            "tabpfn_gateway_usage_events_written",
            "Usage events written to the store by the batching recorder.",
            registry=self.registry,
        )

        self.errors = Counter(
            "tabpfn_gateway_errors",
            "Error answers by stable error code (a fixed set: bounded cardinality).",
            ("error_code",),
            registry=self.registry,
        )
        self.usage_pending = Gauge(
            "tabpfn_gateway_usage_events_pending",
            "Usage events buffered in this process and not yet written to the store.",
            registry=self.registry,
        )
        self.usage_dropped = Gauge(
            "tabpfn_gateway_usage_events_dropped",
            "Usage events lost since start because the store could not take them in time.",
            registry=self.registry,
        )

        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.usage_rejected = Gauge(
            "tabpfn_gateway_usage_events_rejected",
            "Usage events the store refused (bad values) and that were dropped, since start.",
            registry=self.registry,
        )

    def watch_budgets(self, engine: PolicyEngine, *, max_age_seconds: float = 10.0) -> None:
        """Export ``tabpfn_gateway_budget_used_ratio`` from ``engine`` at each scrape (read at
        most every ``max_age_seconds``; bounded to ``MAX_BUDGET_SERIES`` series)."""
        self.registry.register(_BudgetCollector(engine, max_age_seconds))

    def watch_usage(self, recorder: UsageRecorder) -> None:
        """Read the recorder's backlog and losses at each scrape (no hook on its hot path)."""
        self.usage_pending.set_function(lambda: recorder.pending)
        self.usage_dropped.set_function(lambda: recorder.dropped)
        self.usage_rejected.set_function(lambda: recorder.rejected)

    def observe_error(self, error_code: str) -> None:
        """Count one error answer by its stable code."""
        self.errors.labels(error_code).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP answer by route template, method (the standard ones, else
        ``other``: a client chooses it) and status."""
        children = self._request_series.get((route, method, status))
        if children is None:
            label = method if method in _HTTP_METHODS else "other"
            children = (
                self.requests.labels(route, label, str(status)),
                self.request_seconds.labels(route, label),
            )
            # Route templates, methods and statuses are bounded; the cap is a second fence.
            if len(self._request_series) < _MAX_REQUEST_SERIES:
                self._request_series[(route, method, status)] = children
        # The series looked up once, not on every request (labels() takes a lock and
        # builds a tuple each time).
        children[0].inc()
        children[1].observe(seconds)

    def observe_operation(self, call: UpstreamCall) -> None:
        """Count one metered operation (``key_id`` label bounded, see the class)."""
        self.upstream_calls.labels(
            call.operation, self._key_label(call.key_id), str(call.status)
        ).inc()
        self.upstream_seconds.labels(call.operation).observe(call.seconds)

    def _key_label(self, key_id: str) -> str:
        # Set membership and add are atomic under the GIL; a race admits one extra at most.
        if key_id in self._key_ids:
            return key_id
        if len(self._key_ids) < self._max_key_ids:
            self._key_ids.add(key_id)
            return key_id
        return OTHER_KEYS

    def render(self) -> bytes:
        """The exposition text for ``/metrics``."""
        return bytes(_generate_latest(self.registry))


class _BudgetCollector:
    """Budget use read from the policy engine at scrape time, shared by every replica's
    database (or Redis), so each replica reports the same figures. Read in the scraping
    thread (the server renders /metrics off its event loop), at most every ``max_age``."""

    def __init__(self, engine: PolicyEngine, max_age: float) -> None:
        self._engine = engine
        self._max_age = max_age
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._usage: list[BudgetUsage] = []

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(_BUDGET_RATIO, _BUDGET_RATIO_HELP, labels=("level", "target"))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._max_age:
                try:
                    self._usage = self._engine.budget_usage(MAX_BUDGET_SERIES)
                except GatewayError as exc:  # a scrape never fails: the last figures stay
                    logger.warning("Could not read budget counters for metrics: %s", exc.error_code)
                self._read_at = time.monotonic()
            usage = self._usage
        family = GaugeMetricFamily(_BUDGET_RATIO, _BUDGET_RATIO_HELP, labels=("level", "target"))
        for budget in usage:
            family.add_metric((budget.level, budget.target_id), budget.ratio)
        yield family
