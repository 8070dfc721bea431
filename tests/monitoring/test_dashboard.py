"""The dashboard: generated with grafana-foundation-sdk, checked in under docs/, queries on real metric names."""

from __future__ import annotations

import re
from importlib.metadata import version

from components import dashboard
from serving import metrics as serving_metrics

RECORDED = {"modelstack:request_errors:ratio_rate1h"}
DCGM = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}


def _exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])] + \
        [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]


def test_docs_copies_are_up_to_date():
    for path, text in dashboard.docs_files().items():
        assert path.is_file() and path.read_text() == text, \
            f"{path} is stale: run `python -m components.dashboard`"


def test_sdk_matches_the_deployed_grafana():
    assert version("grafana-foundation-sdk").endswith("!" + dashboard.GRAFANA_VERSION)
    from components.monitoring_config import GRAFANA_IMAGE, GRAFANA_TAG
    assert GRAFANA_TAG == dashboard.GRAFANA_VERSION and f":{GRAFANA_TAG}@" in GRAFANA_IMAGE


def test_panels_cover_traffic_latency_batching_and_replicas():
    board = dashboard.build(gpu=False)
    titles = {p["title"] for p in board["panels"]}
    assert {"Request rate by status", "Request latency", "Queue wait and compute time (p99)",
            "Batch size distribution", "In-flight requests and queue", "Replicas ready"} <= titles
    assert not any("GPU" in t for t in titles)
    gpu_titles = {p["title"] for p in dashboard.build(gpu=True)["panels"]}
    assert {"GPU utilization", "GPU memory used"} <= gpu_titles
    assert board["uid"] == "modelstack-serving"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"] if p["type"] != "row")


def test_queries_use_only_metrics_the_server_exports():
    documented = set(re.findall(r"^(modelstack_\w+)", serving_metrics.__doc__ or "", re.M))
    assert "modelstack_requests_total" in documented
    for expr in _exprs(dashboard.build(gpu=True)):
        for name in re.findall(r"\b((?:modelstack|DCGM)[:\w]*)\{", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in documented or name in RECORDED or name in DCGM, f"unknown metric {name} in {expr}"
