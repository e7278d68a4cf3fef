"""Prometheus metrics of one HTTP server instance, in a registry of its own (not
prometheus_client's global one), so several apps can live in one process (tests).

    serving_requests_total{endpoint, status}          requests answered
    serving_request_duration_seconds{endpoint}        request latency (histogram)
    serving_batch_texts                               texts per model call (histogram)
    serving_batch_requests                            requests with texts in a model call (histogram)
    serving_model_call_duration_seconds               model call time (histogram)
    serving_model_call_failures_total                 model calls that raised
    serving_queue_depth                               texts waiting for a model call (gauge)
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "serving_requests", "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_duration_seconds", "HTTP request latency, by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_texts = Histogram(
            "serving_batch_texts", "Texts per model call", buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.batch_requests = Histogram(
            "serving_batch_requests", "Requests with texts in one model call", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.call_seconds = Histogram(
            "serving_model_call_duration_seconds", "Model call time", buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.call_failures = Counter(
            "serving_model_call_failures", "Model calls that raised", registry=self.registry,
        )
        self.queue_depth = Gauge(
            "serving_queue_depth", "Texts waiting for a model call", registry=self.registry,
        )

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, texts: int, requests: int, seconds: float, failed: bool = False) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.call_seconds.observe(seconds)
        if failed:
            self.call_failures.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
