"""A real Prometheus scrapes a real `python -m serving` process with the generated config and rules.

Discovery is the one part swapped out: Debian's Prometheus has no Kubernetes discovery and there is no
cluster, so file-based discovery hands Prometheus what the pod role would (the pod's labels, annotations,
namespace and name as __meta_* labels) and the generated relabeling does the rest: keep the model's
annotated pods, take the port from prometheus.io/port. Rule groups run every second instead of 30 s.
The error burst comes from a model whose Reshape fails on odd widths: ONNX Runtime fails at run time and
the server answers 500, a real server-side error.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from components.alerts import AlertParams, rules_yaml, to_yaml
from components.monitoring_config import prometheus_config
from tests import processes
from tests.monitoring.test_rules import with_file_sd
from tests.processes import free_port
from tests.serving.models import write_model_dir
from tests.serving.server import ServerProcess

pytestmark = pytest.mark.slow
NS, MODEL, POD = "modelstack-live", "evenwidth", "evenwidth-0"
BURN = "ModelstackErrorBudgetBurn"


def even_width_model() -> onnx.ModelProto:
    """y = x for x [N, K] with K even; odd K fails inside Reshape at run time (-> HTTP 500)."""
    shape = numpy_helper.from_array(np.array([0, 2, -1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Flatten", ["r"], ["y"], axis=1)],
        "even_width",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K2"])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


class Prometheus:
    def __init__(self, binary: str, config: Path, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.logs()}")

    def api(self, path: str, **params: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def wait_for(self, what: str, check, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()[-2000:]}")

    def stop(self) -> None:
        processes.stop(self.proc)
        self.log.close()


def pod_sd_target(port: int, *, app: str = MODEL, scrape: str = "true", pod: str = POD) -> dict[str, Any]:
    """One target group as Kubernetes pod discovery would describe the pod (address = pod IP, no port)."""
    return {"targets": ["127.0.0.1"], "labels": {
        "__meta_kubernetes_namespace": NS,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_node_name": "node-a",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": app,
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape,
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
    }}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prometheus_bin) -> Iterator[tuple[ServerProcess, Prometheus]]:
    tmp = tmp_path_factory.mktemp("live")
    model_dir = write_model_dir(even_width_model(), tmp / "model", MODEL)
    # No warm-up: its dummy input has width 1, which this model rejects.
    server = ServerProcess(model_dir, tmp / "server.log", warmup_runs=0, max_batch_size=8,
                           max_queue_delay_ms=5, max_queue_size=64)
    prom: Prometheus | None = None
    try:
        server.wait_ready()
        targets = tmp / "targets.json"
        targets.write_text(json.dumps([
            pod_sd_target(server.port),
            pod_sd_target(server.port, app="other-model", pod="other-0"),  # another app: dropped
            pod_sd_target(server.port, scrape="false", pod="optout-0"),  # not annotated: dropped
        ]))
        params = AlertParams(namespace=NS, model=MODEL, job=MODEL, availability_target=0.99,
                             latency_threshold_s=5.0, restarts="process-start-time", interval="1s")
        (tmp / "rules.yaml").write_text(rules_yaml(params))
        config = with_file_sd(prometheus_config(NS, MODEL, rules_path=str(tmp / "rules.yaml"),
                                                scrape_interval="1s"), targets)
        config = replace_global(config, evaluation_interval="1s")
        (tmp / "prometheus.yml").write_text(to_yaml(config))
        prom = Prometheus(prometheus_bin, tmp / "prometheus.yml", tmp)
        prom.wait_ready()
        yield server, prom
    finally:
        if prom is not None:
            prom.stop()
        server.stop()


def replace_global(config: dict[str, Any], **values: str) -> dict[str, Any]:
    return {**config, "global": {**config["global"], **values}}


def infer(client: httpx.Client, url: str, rows: int, width: int, name: str = MODEL) -> int:
    body = {"inputs": [{"name": "x", "shape": [rows, width], "datatype": "FP32", "data": [0.5] * (rows * width)}]}
    return client.post(f"{url}/v2/models/{name}/infer", json=body, timeout=10).status_code


def send(url: str, requests: list[tuple[int, int, str]], concurrency: int = 8) -> list[int]:
    with httpx.Client() as client, ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda r: infer(client, url, *r), requests))


def burn_alerts(prom: Prometheus) -> list[dict[str, Any]]:
    return [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == BURN]


def test_prometheus_scrapes_the_server_with_the_generated_relabeling(stack):
    server, prom = stack
    good = [(1 + i % 4, 4, MODEL) for i in range(200)]
    bad = [(1, 4, "no-such-model")] * 10
    codes = send(server.url, good + bad)
    assert codes.count(200) == 200 and codes.count(404) == 10
    malformed = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=b"{not json", timeout=10)
    assert malformed.status_code == 400

    sel = f'namespace="{NS}",model="{MODEL}",job="{MODEL}",pod="{POD}"'
    ok = prom.wait_for("the 200s to be scraped", lambda: [
        s for s in prom.query(f'modelstack_requests_total{{{sel},endpoint="infer",code="200"}}')
        if float(s["value"][1]) >= 200])
    assert ok[0]["metric"]["node"] == "node-a"
    assert prom.wait_for("the 400 to be scraped", lambda: prom.query(f'modelstack_requests_total{{{sel},code="400"}}'))
    unknown = f'modelstack_requests_total{{namespace="{NS}",model="_unknown",code="404"}}'
    assert prom.wait_for("the 404s under the _unknown model label", lambda: prom.query(unknown))

    hist = prom.query(f'modelstack_request_duration_seconds_bucket{{{sel},endpoint="infer",le="+Inf"}}')
    assert hist and float(hist[0]["value"][1]) >= 200
    buckets = prom.query(f"modelstack_request_duration_seconds_bucket{{{sel}}}")
    assert len({b["metric"]["le"] for b in buckets}) == 16  # 15 bounds + Inf (serving/metrics.py)
    batches = prom.query(f'modelstack_batch_size_count{{{sel}}}')
    rows = prom.query(f'modelstack_batch_size_sum{{{sel}}}')
    assert float(batches[0]["value"][1]) > 0
    assert float(rows[0]["value"][1]) >= sum(r for r, _, name in good)  # every row went through a batch
    # prometheus_client writes integer bounds as floats.
    one = prom.query(f'modelstack_batch_size_bucket{{{sel},le="1.0"}}')
    eight = prom.query(f'modelstack_batch_size_bucket{{{sel},le="8.0"}}')
    assert 0 < float(one[0]["value"][1]) < float(eight[0]["value"][1]) == float(batches[0]["value"][1])
    assert prom.query(f'modelstack_queue_capacity{{{sel}}}')[0]["value"][1] == "64"

    targets = prom.api("targets")
    active = [t for t in targets["activeTargets"] if t["labels"]["job"] == MODEL]
    assert len(active) == 1, active  # the other app's pod and the opted-out pod are dropped
    assert active[0]["scrapeUrl"] == f"http://127.0.0.1:{server.port}/metrics"
    assert active[0]["health"] == "up"
    assert len(targets["droppedTargets"]) == 2
    # Good traffic and client errors burn no error budget (rules run every second: give them a few rounds).
    time.sleep(3)
    ratio = prom.query(f'modelstack:request_errors:ratio_rate5m{{namespace="{NS}",model="{MODEL}"}}')
    # 0, or NaN (0/0) if no request fell inside the rate window yet: either way no budget burns.
    assert all(s["value"][1] in ("0", "NaN") for s in ratio), ratio
    assert burn_alerts(prom) == []


def test_error_burst_sets_off_the_burn_rate_alert(stack):
    server, prom = stack
    sel = f'namespace="{NS}",model="{MODEL}"'
    # rate() sees no increase in a series born at its final value: the server starts its 5xx series at 0,
    # so the very first errors of its life count (no warm-up error needed before the burst).
    zero = prom.query(f'modelstack_requests_total{{{sel},code="500",endpoint="infer"}}')
    assert zero and zero[0]["value"][1] == "0", zero
    codes = send(server.url, [(1, 3, MODEL)] * 150 + [(2, 4, MODEL)] * 50)
    assert codes.count(500) == 150 and codes.count(200) == 50, codes

    # 150 of 200 failed: once both codes are scraped the ratio is far past 14.4x the budget yet below 1
    # (a scrape between the 500s and the 200s may briefly see 1.0).
    prom.wait_for("the 5m error ratio to pass 14.4x the budget", lambda: [
        s for s in prom.query(f"modelstack:request_errors:ratio_rate5m{{{sel}}}") if 0.144 < float(s["value"][1]) < 1])
    fast = prom.wait_for("the 1h/5m burn alert to go pending", lambda: [
        a for a in burn_alerts(prom) if a["labels"]["long_window"] == "1h" and a["state"] in ("pending", "firing")])
    assert fast[0]["labels"] | {"namespace": NS, "model": MODEL, "severity": "page"} == fast[0]["labels"]
    # 6h/30m too (its ratio is as high); the ticket windows need the same, over longer windows.
    prom.wait_for("the 6h/30m burn alert to go pending", lambda: [
        a for a in burn_alerts(prom) if a["labels"]["long_window"] == "6h"])
