"""`promtool test rules` cases for every alert: series in, firing alerts out, and cases that must stay quiet.

The rule files are rendered by components/alerts.py for two fixed example stacks (the thresholds below are
what those parameters give); expected annotations are the rule's own templates filled with the expected
labels, so a case fails on any label or threshold change. `python -m tests.monitoring.promtool_cases`
regenerates the checked-in copies under monitoring/ (run them with `promtool test rules monitoring/*.test.yaml`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from components.alerts import AlertParams, rule_groups, to_yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "monitoring"
NS, MODEL = "modelstack-example", "demo"
S = f'namespace="{NS}",model="{MODEL}"'
T = f'namespace="{NS}",job="{MODEL}"'
# availability 99.9% (budget 0.001); latency threshold 0.105 s (benchmark 50 ms x 2 + 5 ms).
PARAMS = {
    "dev": AlertParams(namespace=NS, model=MODEL, job=MODEL, availability_target=0.999, latency_threshold_s=0.105,
                       restarts="process-start-time", gpu=False, interval="1m"),
    "prod": AlertParams(namespace=NS, model=MODEL, job=MODEL, availability_target=0.999, latency_threshold_s=0.105,
                        restarts="kube-state-metrics", gpu=True, interval="1m"),
}


def _alert_rules(p: AlertParams) -> list[dict[str, Any]]:
    return [r for g in rule_groups(p) for r in g["rules"] if "alert" in r]


def _fill(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def expect(p: AlertParams, name: str, labels: dict[str, str], **select: str) -> list[dict[str, Any]]:
    """Expected firing alerts of rule(s) `name` (narrowed by rule labels in `select`) for series `labels`."""
    out = []
    for rule in _alert_rules(p):
        if rule["alert"] != name or any(rule["labels"].get(k) != v for k, v in select.items()):
            continue
        merged = {**labels, **rule["labels"]}
        out.append({"exp_labels": merged,
                    "exp_annotations": {k: _fill(v, merged) for k, v in rule["annotations"].items()}})
    assert out, f"no alert rule {name} {select}"
    return out


def _requests(ok_per_min: int, err_per_min: int, minutes: int, code: str = "500") -> list[dict[str, str]]:
    series = [{"series": f'modelstack_requests_total{{{S},endpoint="infer",code="200"}}',
               "values": f"0+{ok_per_min}x{minutes}"}]
    if err_per_min:
        series.append({"series": f'modelstack_requests_total{{{S},endpoint="infer",code="{code}"}}',
                       "values": f"0+{err_per_min}x{minutes}"})
    return series


def _case(name: str, series: list[dict[str, str]], checks: list[tuple[str, str, list[dict[str, Any]]]],
          ) -> dict[str, Any]:
    return {"name": name, "interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": t, "alertname": a, "exp_alerts": e} for t, a, e in checks]}


def slo_cases(p: AlertParams) -> list[dict[str, Any]]:
    burn = "ModelstackErrorBudgetBurn"
    sel = {"namespace": NS, "model": MODEL}
    return [
        _case("2% errors: fast page after 2m, the 6h/30m page after 15m, tickets later", _requests(980, 20, 300), [
            ("1m", burn, []),
            ("10m", burn, expect(p, burn, sel, long_window="1h")),
            ("20m", burn, expect(p, burn, sel, long_window="1h") + expect(p, burn, sel, long_window="6h")),
        ]),
        _case("503s from overload count as 5xx too", _requests(980, 20, 30, code="503"), [
            ("10m", burn, expect(p, burn, sel, long_window="1h")),
        ]),
        _case("0.5% errors: 1d/2h ticket after 1h, never a page", _requests(995, 5, 300), [
            ("50m", burn, []),
            ("90m", burn, expect(p, burn, sel, long_window="1d")),
        ]),
        _case("0.2% errors: only the 3d/6h ticket, after 3h", _requests(998, 2, 300), [
            ("2h", burn, []),
            ("4h", burn, expect(p, burn, sel, long_window="3d")),
        ]),
        _case("0.05% errors are within the 99.9% budget: nothing fires", _requests(9995, 5, 300), [
            ("4h", burn, []),
        ]),
        _case("4xx are the client's fault: no burn", _requests(900, 100, 60, code="400"), [
            ("30m", burn, []),
        ]),
    ]


def _latency_series(le_counts: dict[str, int], minutes: int) -> list[dict[str, str]]:
    return [{"series": f'modelstack_request_duration_seconds_bucket{{{S},endpoint="infer",le="{le}"}}',
             "values": f"0+{per_min}x{minutes}"} for le, per_min in le_counts.items()]


def latency_cases(p: AlertParams) -> list[dict[str, Any]]:
    name = "ModelstackLatencyP99High"
    sel = {"namespace": NS, "model": MODEL}
    slow = {"0.05": 0, "0.1": 0, "0.25": 600, "+Inf": 600}  # every request between 100 and 250 ms
    fast = {"0.05": 600, "0.1": 600, "0.25": 600, "+Inf": 600}  # every request under 50 ms
    return [
        _case("p99 about 250 ms > 105 ms for 10m pages", _latency_series(slow, 40), [
            ("8m", name, []),
            ("20m", name, expect(p, name, sel)),
        ]),
        _case("p99 under 50 ms stays quiet", _latency_series(fast, 40), [("30m", name, [])]),
    ]


def saturation_cases(p: AlertParams) -> list[dict[str, Any]]:
    name = "ModelstackQueueSaturated"
    pod = {"namespace": NS, "model": MODEL, "pod": "demo-1"}

    def queue(depth: int) -> list[dict[str, str]]:
        lbl = f'{S},pod="demo-1"'
        return [{"series": f"modelstack_queue_depth{{{lbl}}}", "values": f"{depth}x10"},
                {"series": f"modelstack_queue_capacity{{{lbl}}}", "values": "256x10"}]

    return [
        _case("queue 240/256 for 2m warns", queue(240), [("1m", name, []), ("5m", name, expect(p, name, pod))]),
        _case("queue 100/256 stays quiet", queue(100), [("5m", name, [])]),
    ]


def target_cases(p: AlertParams) -> list[dict[str, Any]]:
    def up(pod: str, values: str) -> dict[str, str]:
        return {"series": f'up{{{T},pod="{pod}",instance="10.0.0.{pod[-1]}:8080"}}', "values": values}

    one = {"namespace": NS, "job": MODEL, "pod": "demo-1", "instance": "10.0.0.1:8080"}
    svc = {"namespace": NS, "job": MODEL}
    return [
        _case("the only pod down for 5m: target down and service down", [up("demo-1", "1 1 0x15")], [
            ("5m", "ModelstackTargetDown", []),
            ("10m", "ModelstackTargetDown", expect(p, "ModelstackTargetDown", one)),
            ("10m", "ModelstackServiceDown", expect(p, "ModelstackServiceDown", svc)),
        ]),
        _case("one of two pods down: ticket, no page", [up("demo-1", "1 1 0x15"), up("demo-2", "1x17")], [
            ("10m", "ModelstackTargetDown", expect(p, "ModelstackTargetDown", one)),
            ("10m", "ModelstackServiceDown", []),
        ]),
        _case("no serving target at all pages", [{"series": 'up{job="prometheus"}', "values": "1x15"}], [
            ("10m", "ModelstackServiceDown", expect(p, "ModelstackServiceDown", svc)),
        ]),
        _case("all pods up: quiet", [up("demo-1", "1x15")], [
            ("10m", "ModelstackTargetDown", []), ("10m", "ModelstackServiceDown", []),
        ]),
    ]


def restart_cases(p: AlertParams) -> list[dict[str, Any]]:
    name = "ModelstackPodRestarting"
    if p.restarts == "kube-state-metrics":
        lbl = f'namespace="{NS}",pod="demo-1",container="server"'
        labels = {"namespace": NS, "pod": "demo-1", "container": "server"}
        metric = "kube_pod_container_status_restarts_total"
        crashing, once = "0 0 0 1 1 1 2 2 2 2 2", "0 0 0 1 1 1 1 1 1 1 1"
    else:
        lbl = f'{T},pod="demo-1",instance="10.0.0.1:8080"'
        labels = {"namespace": NS, "job": MODEL, "pod": "demo-1", "instance": "10.0.0.1:8080"}
        metric = "process_start_time_seconds"
        crashing, once = "100 100 100 280 280 280 460 460 460 460 460", "100 100 100 280 280 280 280 280 280 280 280"
    return [
        _case("two restarts in 30 minutes warn", [{"series": f"{metric}{{{lbl}}}", "values": crashing}], [
            ("4m", name, []), ("10m", name, expect(p, name, labels)),
        ]),
        _case("a single restart stays quiet", [{"series": f"{metric}{{{lbl}}}", "values": once}], [("10m", name, [])]),
    ]


def gpu_cases(p: AlertParams) -> list[dict[str, Any]]:
    gpu = 'job="dcgm-exporter",gpu="0",Hostname="gpu-node-a",UUID="GPU-1"'
    labels = {"job": "dcgm-exporter", "gpu": "0", "Hostname": "gpu-node-a", "UUID": "GPU-1"}
    full, idle = "ModelstackGpuMemoryNearFull", "ModelstackGpuIdleUnderTraffic"

    def fb(used: int, free: int) -> list[dict[str, str]]:
        return [{"series": f"DCGM_FI_DEV_FB_USED{{{gpu}}}", "values": f"{used}x30"},
                {"series": f"DCGM_FI_DEV_FB_FREE{{{gpu}}}", "values": f"{free}x30"}]

    def util(value: int) -> dict[str, str]:
        return {"series": f"DCGM_FI_DEV_GPU_UTIL{{{gpu}}}", "values": f"{value}x30"}

    return [
        _case("framebuffer 98% used for 10m warns", fb(23000, 500), [
            ("5m", full, []), ("15m", full, expect(p, full, labels)),
        ]),
        _case("framebuffer half used stays quiet", fb(12000, 12000), [("15m", full, [])]),
        _case("GPU at 0% while 10 req/s flow warns", [util(0), *_requests(600, 0, 30)], [
            ("10m", idle, []), ("25m", idle, expect(p, idle, {})),
        ]),
        _case("GPU at 0% without traffic stays quiet", [util(0)], [("25m", idle, [])]),
        _case("GPU busy under traffic stays quiet", [util(35), *_requests(600, 0, 30)], [("25m", idle, [])]),
    ]


def test_file(stack: str, rules_file: str) -> dict[str, Any]:
    p = PARAMS[stack]
    tests = slo_cases(p) + latency_cases(p) + saturation_cases(p) + target_cases(p) + restart_cases(p)
    if p.gpu:
        tests += gpu_cases(p)
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


def artifacts() -> dict[Path, str]:
    """The checked-in example rule files and their promtool tests."""
    out = {}
    for stack, p in PARAMS.items():
        rules = f"rules-example-{stack}.yaml"
        out[OUT / rules] = to_yaml({"groups": rule_groups(p)})
        out[OUT / f"rules-example-{stack}.test.yaml"] = to_yaml(test_file(stack, rules))
    return out


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for path, text in artifacts().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
