"""The alert and recording rules: one source, rendered into a rule file (lightweight) and a PrometheusRule (prod).

Metric names come from serving/metrics.py. Every selector pins the stack's namespace and model, so several
stacks can share one Prometheus (prod) without seeing each other's series.

- Availability: multi-window, multi-burn-rate alerts on the 5xx ratio (Google SRE workbook, ch. 5):
  1h/5m at 14.4x and 6h/30m at 6x page; 1d/2h at 3x and 3d/6h at 1x open a ticket.
- Latency: p99 from the request histogram above a threshold derived from the model's benchmarked p99.
- Saturation: queue depth / capacity near 1 (beyond it the server answers 503).
- Restarts: kube-state-metrics' restart counter (prod), or changes of the server's process_start_time_seconds
  between scrapes of the same pod (lightweight, which runs no kube-state-metrics).
- Targets: one target down (ticket), no target up at all (page: no requests are counted, so no ratio alert
  could fire).
- GPU (DCGM exporter): framebuffer near full; utilization stuck at zero while requests flow (the model fell
  back to CPU).

A canary's analysis (an Argo Rollouts AnalysisTemplate, `canary_metrics`) judges the new pods alone by the same
two figures: the 5xx ratio at which the fastest burn-rate alert pages, and the latency alert's p99 threshold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml

# (long window, short window, burn-rate factor, severity, `for`)
BURN_RATE_WINDOWS: tuple[tuple[str, str, float, str, str], ...] = (
    ("1h", "5m", 14.4, "page", "2m"),
    ("6h", "30m", 6.0, "page", "15m"),
    ("1d", "2h", 3.0, "ticket", "1h"),
    ("3d", "6h", 1.0, "ticket", "3h"),
)
ERROR_RATIO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
QUEUE_SATURATION = 0.9
GPU_MEMORY_FULL = 0.95
GPU_IDLE_MIN_RPS = 1.0  # below this a tiny model may honestly show 0% utilization
RESTARTS_IN_30M = 2
SERVER_CONTAINER = "server"  # the serving container's name (components/model_service.py)
DCGM_JOB = "dcgm-exporter"
RestartSource = Literal["kube-state-metrics", "process-start-time"]


@dataclass(frozen=True)
class AlertParams:
    namespace: str
    model: str
    job: str
    """Scrape job of the serving pods: the model name in both modes (scrape job / ServiceMonitor jobLabel)."""
    availability_target: float
    latency_threshold_s: float
    restarts: RestartSource
    gpu: bool = False
    interval: str = "30s"
    """Rule evaluation interval; tests shorten it."""

    def __post_init__(self) -> None:
        if not 0.9 <= self.availability_target < 1:
            raise ValueError(f"AlertParams.availability_target must be in [0.9, 1), got {self.availability_target}")
        if self.latency_threshold_s <= 0:
            raise ValueError(f"AlertParams.latency_threshold_s must be positive, got {self.latency_threshold_s}")
        if not re.match(r"^\d+(ms|s|m|h)$", self.interval):
            raise ValueError(f"AlertParams.interval must be a Prometheus duration, got {self.interval!r}")

    @property
    def error_budget(self) -> float:
        return 1.0 - self.availability_target

    @property
    def page_error_ratio(self) -> float:
        """The 5xx ratio at which the fastest burn-rate alert pages; a canary above it fails its analysis."""
        return BURN_RATE_WINDOWS[0][2] * self.error_budget

    @property
    def series(self) -> str:
        """Label matchers of the server's own metrics."""
        return f'namespace="{self.namespace}",model="{self.model}"'

    @property
    def targets(self) -> str:
        """Label matchers of the serving scrape targets (`up`, process_* metrics)."""
        return f'namespace="{self.namespace}",job="{self.job}"'


def latency_threshold_s(benchmark_p99_ms: float, multiplier: float, floor_s: float) -> float:
    """benchmark p99 x multiplier, plus the server's own overhead (HTTP, JSON, batching delay)."""
    if benchmark_p99_ms < 0 or multiplier < 1 or floor_s < 0:
        raise ValueError(f"bad latency inputs: p99 {benchmark_p99_ms} ms, x{multiplier}, floor {floor_s} s")
    return round(benchmark_p99_ms * multiplier / 1000.0 + floor_s, 6)


def _num(x: float) -> str:
    return f"{x:.6g}"


def _ratio_record(window: str) -> str:
    return f"modelstack:request_errors:ratio_rate{window}"


P99_RECORD = "modelstack:request_duration_seconds:p99_5m"


def rule_groups(p: AlertParams) -> list[dict[str, Any]]:
    """Prometheus rule groups (the `groups:` list of a rule file / PrometheusRule spec)."""
    groups = [_slo_group(p), _latency_group(p), _saturation_group(p), _targets_group(p)]
    if p.gpu:
        groups.append(_gpu_group(p))
    return groups


class _BlockDumper(yaml.SafeDumper):
    """Multi-line PromQL as `|` blocks: readable in the ConfigMap and in diffs."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=1000)


def rules_yaml(p: AlertParams) -> str:
    return to_yaml({"groups": rule_groups(p)})


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str,
           **labels: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ != "0m":
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **labels}
    # Annotations name the series' labels only (no $value), so promtool tests can state them exactly.
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def _slo_group(p: AlertParams) -> dict[str, Any]:
    total = f"modelstack_requests_total{{{p.series}}}"
    errors = f'modelstack_requests_total{{{p.series},code=~"5.."}}'
    rules: list[dict[str, Any]] = [
        {
            "record": _ratio_record(w),
            "expr": f"sum by (namespace, model) (rate({errors}[{w}]))\n/\n"
                    f"sum by (namespace, model) (rate({total}[{w}]))",
        }
        for w in ERROR_RATIO_WINDOWS
    ]
    for long, short, factor, severity, for_ in BURN_RATE_WINDOWS:
        limit = _num(factor * p.error_budget)
        rules.append(_alert(
            "ModelstackErrorBudgetBurn",
            f"{_ratio_record(long)}{{{p.series}}} > {limit}\nand\n{_ratio_record(short)}{{{p.series}}} > {limit}",
            for_, severity,
            "{{ $labels.model }} in {{ $labels.namespace }} is burning its error budget",
            f"5xx ratio above {limit} ({_num(factor)}x the budget of the {_num(p.availability_target * 100)}% "
            f"availability SLO) over both {long} and {short}.",
            long_window=long, short_window=short,
        ))
    return {"name": "modelstack.slo", "interval": p.interval, "rules": rules}


def _latency_group(p: AlertParams) -> dict[str, Any]:
    buckets = f"modelstack_request_duration_seconds_bucket{{{p.series}}}"
    threshold = _num(p.latency_threshold_s)
    return {"name": "modelstack.latency", "interval": p.interval, "rules": [
        {"record": P99_RECORD,
         "expr": f"histogram_quantile(0.99, sum by (namespace, model, le) (rate({buckets}[5m])))"},
        _alert(
            "ModelstackLatencyP99High", f"{P99_RECORD}{{{p.series}}} > {threshold}", "10m", "page",
            "{{ $labels.model }} in {{ $labels.namespace }} answers slowly",
            f"p99 request latency above {threshold} s (benchmarked model p99 x multiplier + server overhead) "
            "for 10 minutes.",
        ),
    ]}


def _saturation_group(p: AlertParams) -> dict[str, Any]:
    return {"name": "modelstack.saturation", "interval": p.interval, "rules": [
        _alert(
            "ModelstackQueueSaturated",
            f"max by (namespace, model, pod) (\n  modelstack_queue_depth{{{p.series}}}\n  /\n"
            f"  modelstack_queue_capacity{{{p.series}}}\n) > {_num(QUEUE_SATURATION)}",
            "2m", "warning",
            "{{ $labels.pod }} has its request queue nearly full",
            f"Queue depth above {_num(QUEUE_SATURATION * 100)}% of capacity for 2 minutes; beyond it requests "
            "get 503. Add replicas or GPU capacity.",
        ),
    ]}


def _targets_group(p: AlertParams) -> dict[str, Any]:
    if p.restarts == "kube-state-metrics":
        restarts = (f'increase(kube_pod_container_status_restarts_total{{namespace="{p.namespace}",'
                    f'container="{SERVER_CONTAINER}"}}[30m]) >= {RESTARTS_IN_30M}')
        source = "kube-state-metrics restart counter"
    else:
        restarts = f"changes(process_start_time_seconds{{{p.targets}}}[30m]) >= {RESTARTS_IN_30M}"
        source = "the server's process_start_time_seconds"
    return {"name": "modelstack.targets", "interval": p.interval, "rules": [
        _alert(
            "ModelstackPodRestarting", restarts, "0m", "warning",
            "{{ $labels.pod }} in {{ $labels.namespace }} keeps restarting",
            f"The serving container restarted at least {RESTARTS_IN_30M} times in 30 minutes ({source}).",
        ),
        _alert(
            "ModelstackTargetDown", f"up{{{p.targets}}} == 0", "5m", "warning",
            "{{ $labels.pod }} in {{ $labels.namespace }} cannot be scraped",
            "Prometheus has failed to scrape this serving pod for 5 minutes.",
        ),
        _alert(
            "ModelstackServiceDown",
            f"sum by (namespace, job) (up{{{p.targets}}}) == 0\nor\nabsent(up{{{p.targets}}})",
            "5m", "page",
            "{{ $labels.job }} in {{ $labels.namespace }} has no serving pod up",
            "No serving pod has been scraped successfully for 5 minutes: the model is not serving.",
        ),
    ]}


# A canary's figures: its pods only, over four scrapes (15 s apart) so that one scrape more or less matters little.
CANARY_WINDOW = "1m"


def canary_metrics(p: AlertParams, pods: str, prometheus_url: str, interval_s: int, failure_limit: int,
                   count: int) -> list[dict[str, Any]]:
    """The metrics of an Argo Rollouts AnalysisTemplate: the pods matching the regex `pods` (the canary's),
    judged by the thresholds the alerts use. No requests yet (no series, or 0/0) is not a failure."""
    canary = f'{p.series},pod=~"{pods}"'
    total = f"sum(rate(modelstack_requests_total{{{canary}}}[{CANARY_WINDOW}]))"
    errors = f'sum(rate(modelstack_requests_total{{{canary},code=~"5.."}}[{CANARY_WINDOW}]))'
    p99 = (f"histogram_quantile(0.99, sum by (le) (rate(modelstack_request_duration_seconds_bucket{{{canary}}}"
           f"[{CANARY_WINDOW}])))")

    def metric(name: str, query: str, limit: float) -> dict[str, Any]:
        return {
            "name": name, "interval": f"{interval_s}s", "count": count, "failureLimit": failure_limit,
            "successCondition": f"len(result) == 0 || isNaN(result[0]) || result[0] <= {_num(limit)}",
            "provider": {"prometheus": {"address": prometheus_url, "query": query}},
        }

    return [metric("error-ratio", f"{errors}\n/\n{total}", p.page_error_ratio),
            metric("latency-p99", p99, p.latency_threshold_s)]


def _gpu_group(p: AlertParams) -> dict[str, Any]:
    dcgm = f'job="{DCGM_JOB}"'
    return {"name": "modelstack.gpu", "interval": p.interval, "rules": [
        _alert(
            "ModelstackGpuMemoryNearFull",
            f"DCGM_FI_DEV_FB_USED{{{dcgm}}}\n/\n(DCGM_FI_DEV_FB_USED{{{dcgm}}} + DCGM_FI_DEV_FB_FREE{{{dcgm}}})\n"
            f"> {_num(GPU_MEMORY_FULL)}",
            "10m", "warning",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is nearly out of memory",
            f"GPU framebuffer above {_num(GPU_MEMORY_FULL * 100)}% used for 10 minutes; the next larger batch "
            "may fail with out-of-memory.",
        ),
        _alert(
            "ModelstackGpuIdleUnderTraffic",
            f"max(DCGM_FI_DEV_GPU_UTIL{{{dcgm}}}) == 0\nand on ()\n"
            f"sum(rate(modelstack_requests_total{{{p.series}}}[5m])) > {_num(GPU_IDLE_MIN_RPS)}",
            "15m", "warning",
            "GPUs idle while the model serves traffic",
            f"Every GPU has shown 0% utilization for 15 minutes while {p.model} in {p.namespace} answered more "
            f"than {_num(GPU_IDLE_MIN_RPS)} request/s: inference probably fell back to the CPU.",
            namespace=p.namespace, model=p.model,
        ),
    ]}
