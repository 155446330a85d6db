"""Prometheus metrics of the model server, correct with several worker processes.

With `PROMETHEUS_MULTIPROC_DIR` set (as `churn serve --workers N` does), every worker writes
its samples to that folder and /metrics aggregates them; otherwise one in-process registry.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    """The server's metrics and their exposition; API key names appear only if `key_names`."""

    def __init__(self, *, key_names: bool = False) -> None:
        self.key_names = key_names
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.extra: list[Collector] = []  # collectors read at scrape time (the monitoring results)
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "churn_http_requests_total", "HTTP requests", ["route", "status"], registry=registry
        )
        self.latency = Histogram(
            "churn_http_request_seconds",
            "Request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.scores = Histogram(
            "churn_prediction_score", "Churn probabilities served", buckets=SCORE_BUCKETS, registry=registry
        )
        self.predictions = Counter(
            "churn_predictions_total", "Predictions served", ["model_version", "decision"], registry=registry
        )
        self.rate_limited = Counter(
            "churn_rate_limited_total", "Requests refused by the rate limit", ["key"], registry=registry
        )
        self.model_info = Gauge(
            "churn_model_info",
            "The model version served (value 1)",
            ["version"],
            registry=registry,
            multiprocess_mode="liveall",
        )

        # Labelled children, looked up once per label set: a lookup costs more than the update.
        # The label sets are few (routes, statuses, served versions), so these stay small.
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._prediction_children: dict[tuple[str, int], Any] = {}

    def count_request(self, route: str, status: int, seconds: float) -> None:
        """One answered request: its route template, status and latency."""
        children = self._request_children.get((route, status))
        if children is None:
            counter = self.requests.labels(route=route, status=str(status))
            children = (counter, self.latency.labels(route=route))
            self._request_children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_prediction(self, version: str, probability: float, decision: int) -> None:
        """One served prediction: its score and decision, by model version."""
        child = self._prediction_children.get((version, decision))
        if child is None:
            child = self.predictions.labels(model_version=version, decision=str(decision))
            self._prediction_children[(version, decision)] = child
        child.inc()
        self.scores.observe(probability)

    def count_rate_limited(self, key_name: str) -> None:
        """One request refused by the rate limit, labelled by its key's name or that name's hash."""
        self.rate_limited.labels(key=key_name if self.key_names else key_label(key_name)).inc()

    def set_model(self, version: str, previous: str | None) -> None:
        """Mark the version being served."""
        if previous is not None and previous != version:
            self.model_info.remove(previous)
        self.model_info.labels(version=version).set(1)

    def exposition(self) -> bytes:
        """The text exposition format of every metric, across workers when multiprocess."""
        if self.registry is not None:
            return generate_latest(self.registry) + self._extra()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry) + self._extra()

    def _extra(self) -> bytes:
        if not self.extra:
            return b""
        registry = CollectorRegistry(auto_describe=False)
        for collector in self.extra:
            registry.register(collector)
        return generate_latest(registry)


def key_label(name: str) -> str:
    """What /metrics shows for an API key unless names are allowed: a stable, short hash of its name."""
    return "key-" + hashlib.sha256(name.encode()).hexdigest()[:12]
