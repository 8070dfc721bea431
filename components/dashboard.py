"""The serving dashboard, built with grafana-foundation-sdk (pinned to the deployed Grafana, GRAFANA_VERSION).

One dashboard for every stack: the Prometheus datasource, namespace and model are template variables, so
the same JSON works with the lightweight Grafana and with kube-prometheus-stack's. Queries use the metric
names of serving/metrics.py. GPU stacks add a row of DCGM exporter panels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from .alerts import DCGM_JOB

GRAFANA_VERSION = "11.6.0"  # the SDK build is grafana-foundation-sdk==1769699379!11.6.0
UID = "modelstack-serving"
DOCS = Path(__file__).resolve().parents[1] / "docs"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace="$namespace",model="$model"'
TARGETS = 'namespace="$namespace",job="$model"'


def _q(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def _series(title: str, unit: str, *queries: prometheus.Dataquery, desc: str = "") -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DS).height(8).span(12).fill_opacity(10)
    if desc:
        panel = panel.description(desc)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def _quantiles(histogram: str, labels: str, title: str, desc: str) -> timeseries.Panel:
    qs = [
        _q(f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{{labels}}}[$__rate_interval])))",
           f"p{round(q * 100)}", ref)
        for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
    ]
    return _series(title, "s", *qs, desc=desc)


def build(gpu: bool = False) -> dict[str, Any]:
    """The dashboard model as a JSON-ready dict."""
    variables = [
        db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        db.QueryVariable("namespace").label("Namespace").datasource(DS)
        .query("label_values(modelstack_model_info, namespace)").refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED),
        db.QueryVariable("model").label("Model").datasource(DS)
        .query('label_values(modelstack_model_info{namespace="$namespace"}, model)')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED),
    ]
    d = (
        db.Dashboard("Model serving").uid(UID).tags(["modelstack", "inference"])
        .description("Traffic, latency, batching and saturation of one served model (serving/metrics.py).")
        .time("now-1h", "now").refresh("30s").timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    for v in variables:
        d = d.with_variable(v)

    d = d.with_row(db.Row("Traffic"))
    d = d.with_panel(_series(
        "Request rate by status", "reqps",
        _q(f"sum by (code) (rate(modelstack_requests_total{{{SEL}}}[$__rate_interval]))", "{{code}}"),
        desc="Inference requests answered per second, by HTTP status code.",
    ))
    d = d.with_panel(
        stat.Panel().title("5xx ratio (1h)").unit("percentunit").datasource(DS).height(8).span(6)
        .description("Share of requests answered 5xx over the last hour; the SLO alerts burn on this ratio.")
        .with_target(_q(f"modelstack:request_errors:ratio_rate1h{{{SEL}}}", "5xx ratio"))
    )
    d = d.with_panel(
        stat.Panel().title("Replicas ready").unit("short").datasource(DS).height(8).span(6)
        .description("Serving pods reporting ready (modelstack_ready) and pods scraped.")
        .with_target(_q(f"sum(modelstack_ready{{{SEL}}})", "ready"))
        .with_target(_q(f"count(up{{{TARGETS}}})", "scraped", "B"))
    )

    d = d.with_row(db.Row("Latency"))
    d = d.with_panel(_quantiles("modelstack_request_duration_seconds", SEL, "Request latency",
                                "Arrival to response built, from the server's histogram."))
    d = d.with_panel(_series(
        "Queue wait and compute time (p99)", "s",
        _q(f"histogram_quantile(0.99, sum by (le) (rate(modelstack_queue_duration_seconds_bucket{{{SEL}}}"
           "[$__rate_interval])))", "queue p99"),
        _q(f"histogram_quantile(0.99, sum by (le) (rate(modelstack_compute_duration_seconds_bucket{{{SEL}}}"
           "[$__rate_interval])))", "compute p99", "B"),
        desc="Time waiting in the batching queue vs one session.run over a batch.",
    ))

    d = d.with_row(db.Row("Batching and saturation"))
    d = d.with_panel(
        heatmap.Panel().title("Batch size distribution").datasource(DS).height(8).span(12).calculate(False)
        .description("Rows per session.run; mostly 1 means batching never fills (little concurrency).")
        .with_target(_q(f"sum by (le) (increase(modelstack_batch_size_bucket{{{SEL}}}[$__rate_interval]))",
                        "{{le}}").format(pm.PromQueryFormat.HEATMAP))
    )
    d = d.with_panel(_series(
        "In-flight requests and queue", "short",
        _q(f"sum by (pod) (modelstack_inflight_requests{{{SEL}}})", "in flight {{pod}}"),
        _q(f"sum by (pod) (modelstack_queue_depth{{{SEL}}})", "queued {{pod}}", "B"),
        _q(f"max(modelstack_queue_capacity{{{SEL}}})", "queue capacity", "C"),
        desc="Requests being handled and waiting, per pod; past the capacity the server answers 503.",
    ))
    if gpu:
        dcgm = f'job="{DCGM_JOB}"'
        d = d.with_row(db.Row("GPU (DCGM exporter)"))
        d = d.with_panel(_series(
            "GPU utilization", "percent",
            _q(f"DCGM_FI_DEV_GPU_UTIL{{{dcgm}}}", "{{Hostname}} gpu {{gpu}}"),
            desc="Stuck at 0 while requests flow means inference runs on the CPU.",
        ).min(0).max(100))
        d = d.with_panel(_series(
            "GPU memory used", "percentunit",
            _q(f"DCGM_FI_DEV_FB_USED{{{dcgm}}} / (DCGM_FI_DEV_FB_USED{{{dcgm}}} + DCGM_FI_DEV_FB_FREE{{{dcgm}}})",
               "{{Hostname}} gpu {{gpu}}"),
            desc="Framebuffer in use; near 1 the next large batch may fail with out-of-memory.",
        ).min(0).max(1))
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def render(gpu: bool = False) -> str:
    return json.dumps(build(gpu), indent=2, sort_keys=True) + "\n"


def docs_files() -> dict[Path, str]:
    """The generated copies under docs/ (a test keeps them up to date)."""
    return {DOCS / "dashboard.json": render(gpu=False), DOCS / "dashboard-gpu.json": render(gpu=True)}


if __name__ == "__main__":  # python -m components.dashboard: regenerate docs/dashboard*.json
    for path, text in docs_files().items():
        path.write_text(text)
        print(f"wrote {path}")
