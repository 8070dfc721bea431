"""Prometheus metrics of the inference server, served on ``GET /metrics``.

The monitoring component builds alert rules and dashboards from these names; renaming one is a breaking change.
Labels stay low-cardinality: ``model`` is the served model's name (``_unknown`` for any other name a client
sends), ``endpoint`` is one of ``infer`` (v2 REST, JSON or binary), ``predict`` (v1) or ``grpc`` (v2 gRPC
ModelInfer), ``code`` is the HTTP status code (for gRPC, the one the same error gets over REST).

=============================================  =========  ======================  ====================================
name                                           type       labels                  meaning
=============================================  =========  ======================  ====================================
modelstack_requests_total                      counter    model, endpoint, code   inference requests answered
modelstack_request_duration_seconds            histogram  model, endpoint         request arrival to response built
modelstack_queue_duration_seconds              histogram  model                   wait in the batching queue
modelstack_compute_duration_seconds            histogram  model                   one session.run (one batch)
modelstack_batch_size                          histogram  model                   rows per session.run
modelstack_inflight_requests                   gauge      model                   inference requests being handled
modelstack_queue_depth                         gauge      model                   requests waiting for the model
modelstack_queue_capacity                      gauge      model                   queue bound; 503 beyond it
modelstack_ready                               gauge      model                   1 when ready for traffic, else 0
modelstack_model_info                          gauge      model, digest,          always 1; model identity
                                                          providers, version
process_*, python_*                            (various)  -                       prometheus_client's process and
                                                                                  runtime collectors (RSS, CPU, GC)
=============================================  =========  ======================  ====================================

Latency buckets run from 0.25 ms to 10 s: the server's own overhead target is 0.5 ms at p50 and 2 ms at p99,
and alerts compare p99 against the model's benchmarked latency (milliseconds to a few hundred ms).
Queue saturation = ``modelstack_queue_depth / modelstack_queue_capacity``; error rate from ``code=~"5.."``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNKNOWN_MODEL = "_unknown"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """One registry per app, so several apps (tests) in one process never clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "modelstack_requests", "Inference requests answered.", ["model", "endpoint", "code"], registry=r
        )
        self.request_duration = Histogram(
            "modelstack_request_duration_seconds",
            "Inference request latency in the server, from arrival to response built.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "modelstack_queue_duration_seconds",
            "Time a request waited in the batching queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "modelstack_compute_duration_seconds",
            "Duration of one session.run over one batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "modelstack_batch_size", "Rows per session.run.", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inflight = Gauge(
            "modelstack_inflight_requests", "Inference requests being handled.", ["model"], registry=r
        )
        self.queue_depth = Gauge("modelstack_queue_depth", "Requests waiting for the model.", ["model"], registry=r)
        self.queue_capacity = Gauge(
            "modelstack_queue_capacity", "Most requests that may wait; beyond it 503.", ["model"], registry=r
        )
        self.ready = Gauge("modelstack_ready", "1 when the server is ready for traffic.", ["model"], registry=r)
        self.model_info = Gauge(
            "modelstack_model_info",
            "Identity of the served model (always 1).",
            ["model", "digest", "providers", "version"],
            registry=r,
        )

    def start_series(self, model: str, endpoints: tuple[str, ...] = ("infer", "predict")) -> None:
        """Create the success and 5xx series at 0: rate() cannot see the increase that creates a series,
        so without this a pod's first requests would be missing from the error ratio (or skew it)."""
        for endpoint in endpoints:
            for code in ("200", "500", "503"):
                self.requests.labels(model, endpoint, code)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestSeries:
    """The request metrics' children, bound once per label set: labels() costs microseconds per call,
    and the label sets are few (low cardinality)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._inflight: dict[str, Any] = {}
        self._done: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def inflight(self, model: str) -> Any:
        child = self._inflight.get(model)
        if child is None:
            child = self._inflight[model] = self.metrics.inflight.labels(model)
        return child

    def observe(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        key = (model, endpoint, code)
        pair = self._done.get(key)
        if pair is None:
            pair = self._done[key] = (
                self.metrics.requests.labels(model, endpoint, str(code)),
                self.metrics.request_duration.labels(model, endpoint),
            )
        pair[0].inc()
        pair[1].observe(seconds)
