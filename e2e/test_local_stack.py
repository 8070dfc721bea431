"""`pulumi preview`, `up` and `destroy` for real: the Pulumi CLI, its Python language host and the
kubernetes and docker-build plugins, against the local cluster's API server, registry, BuildKit and its
real node (containerd, runc, kube-proxy, CoreDNS): the serving pods run the pushed image and answer.

The steps share one stack and run in order; each asserts what a user would check by hand.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from e2e.conftest import FIGURES
from e2e.engine import (
    CLUSTER,
    REPO,
    Stack,
    cluster_ip,
    http_json,
    kube_json,
    kubectl,
    manifest_digest,
    pods,
    port_forward,
    registry_tags,
    run,
)
from e2e.load import Load, LoadResult
from scripts.sample_request import request as sample_request

pytestmark = pytest.mark.e2e

REPOSITORY = "modelstack/digits"
NODE = "modelstack-node"  # local-cluster/cluster.sh: the real node (kubelet + containerd)
REPLICAS = 2  # Pulumi.local.yaml: serving.replicas
# scripts/pulumi.sh runs the policy pack on every preview and up.
POLICY = ["--policy-pack", "policy/analyzer"]
# A no-op preview and up of this stack, policy pack on: twice the targets (3.0 s and 4.0 s).
NO_OP_CEILING_S = {"preview": 6.0, "up": 8.0}
IMAGE = re.compile(r"^(?P<registry>[^/]+)/(?P<repo>[^:@]+):(?P<tag>[^@]+)@(?P<digest>sha256:[0-9a-f]{64})$")
# What the failing-gate step builds: 90% of the weights pruned away cannot keep 99% agreement.
FAILING_RECIPE = {"name": "prune90-int8", "prune": {"method": "global_unstructured", "amount": 0.9},
                  "quantize": {"mode": "dynamic_int8"}}
# Half the channels removed, then fine-tuned on the teacher's outputs (step 14): the user states the gate.
FINETUNE_RECIPE = {"name": "structured50-finetune", "prune": {"method": "structured", "amount": 0.5},
                   "finetune": {"steps": 1000, "time_budget_s": 300}, "gate": {"min_agreement": 0.98}}
# The model as a state_dict with its factory (structured pruning needs the code), and rows to train on.
STATE_DICT_MODEL = {"source": "examples/digits/build/model_state.pt", "format": "state_dict",
                    "factory": "examples.digits.model:build", "trainingData": "examples/digits/build/training.npz"}


def namespace(stack: Stack) -> str:
    return f"modelstack-{stack.name}"


def expected_resources() -> set[tuple[str, str]]:
    """(type, name) of every resource the program registers for the local stack, from the mocked engine."""
    from tests.pulumi_harness import run_program

    run = run_program("local", secrets={"grafanaAdminPassword": "x"})
    return {(r.type, r.name) for r in run.resources}


def urns_in(output: str) -> set[tuple[str, str]]:
    """(type, name) of each `[urn=...]` in `pulumi preview --diff` output."""
    found = set()
    for urn in re.findall(r"\[urn=(urn:pulumi:[^\]]+)\]", output):
        type_chain, name = urn.split("::")[2:4]
        found.add((type_chain.split("$")[-1], name))
    return found


def rollout(stack: Stack, name: str = "digits") -> dict[str, Any]:
    """The serving pods' Argo Rollout (Pulumi.local.yaml: serving.rollout.strategy canary)."""
    return kube_json(stack.env, "get", "rollout", name, "-n", namespace(stack))


def assert_rolled_out(stack: Stack, image: str) -> None:
    ro = rollout(stack)
    (container,) = ro["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
    status = ro["status"]
    assert str(status.get("observedGeneration")) == str(ro["metadata"]["generation"])  # a string, in Argo's status
    assert status.get("phase") == "Healthy" and status.get("stableRS") == status.get("currentPodHash"), status
    assert status.get("updatedReplicas") == status.get("availableReplicas") == ro["spec"]["replicas"]


def report(stack: Stack, digest: str) -> dict[str, Any]:
    store = Path(json.loads(stack.pulumi("config", "get", "artifacts").output)["store"])
    return json.loads((store / digest / "report.json").read_text())


def artifact_dir(stack: Stack, digest: str) -> Path:
    return Path(json.loads(stack.pulumi("config", "get", "artifacts").output)["store"]) / digest


def assert_running_on_the_node(stack: Stack, app: str, count: int) -> list[dict[str, Any]]:
    """`count` pods of `app` that the kubelet started on the real node, every container ready, none restarted."""
    found = pods(stack.env, namespace(stack), app)
    assert len(found) == count, [p["metadata"]["name"] for p in found]
    for pod in found:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == NODE, name
        assert pod["status"]["phase"] == "Running", (name, pod["status"])
        for c in pod["status"]["containerStatuses"]:
            assert c["ready"] and c["restartCount"] == 0 and "running" in c["state"], (name, c)
            assert c["containerID"].startswith("containerd://"), (name, c)  # a container, not a fake
            assert c["imageID"].split("@")[-1].startswith("sha256:"), (name, c)
    return found


def service_url(stack: Stack) -> str:
    """The serving Service's ClusterIP, which kube-proxy routes from this machine too."""
    return f"http://{cluster_ip(stack.env, namespace(stack), 'digits')}:8080"


def validation_body(stack: Stack, digest: str, rows: int = 1) -> dict[str, Any]:
    data = REPO / json.loads(stack.pulumi("config", "get", "model").output)["validationData"]
    return sample_request(artifact_dir(stack, digest) / "model.onnx", data, rows)


def test_1_preview_of_a_new_stack_names_every_resource(stack: Stack) -> None:
    result = stack.pulumi("preview", "--diff", timing="1 preview --diff (new stack)")
    assert "to create" in result.output
    missing = expected_resources() - urns_in(result.output)
    assert not missing, f"preview does not name {sorted(missing)}"


def test_2_up_builds_pushes_and_deploys_by_digest(stack: Stack) -> None:
    stack.pulumi("up", "--yes", timing="2 up (new stack)", timeout=1800)
    out = stack.outputs()
    image = IMAGE.match(out["image"])
    assert image, f"image output {out['image']!r} is not REGISTRY/REPO:TAG@sha256:DIGEST"
    assert image["repo"] == REPOSITORY and image["registry"] == stack.env["MODELSTACK_REGISTRY"]
    # The registry serves that very manifest, under the digest and under the tag.
    assert manifest_digest(image["registry"], REPOSITORY, image["digest"]) == image["digest"]
    assert manifest_digest(image["registry"], REPOSITORY, image["tag"]) == image["digest"]
    assert image["tag"].startswith(out["modelDigest"][:12])  # the tag carries the model digest
    assert_rolled_out(stack, out["image"])
    # The kubelet runs them on the real node: the serving pods (restricted Pod Security, uid 10001, read-only
    # root) and Prometheus, each from the image pinned by digest.
    for pod in assert_running_on_the_node(stack, "digits", REPLICAS):
        assert pod["status"]["containerStatuses"][0]["imageID"].endswith(image["digest"])
    assert_running_on_the_node(stack, "prometheus", 1)

    # The optimize build ran inside the engine and published to the stack's (fresh) store; the stack's
    # outputs are that artifact's figures.
    rep = report(stack, out["modelDigest"])
    assert rep["digest"] == out["modelDigest"]
    assert out["sizeRatio"] == pytest.approx(rep["size_bytes"]["optimized"] / rep["size_bytes"]["source"], abs=1e-3)
    assert out["accuracyDelta"] == pytest.approx(rep["accuracy"]["delta"], abs=1e-3)
    assert out["agreement"] == pytest.approx(rep["accuracy"]["agreement"], abs=1e-3)
    assert out["latencyP99Ms"] == pytest.approx(rep["latency_ms"]["optimized"]["b1"]["p99"], abs=1e-2)

    # Every Kubernetes object of the stack exists in the API server.
    state = json.loads(stack.export())
    objects = [r for r in state["deployment"]["resources"] if r["type"].startswith("kubernetes:")
               and not r["type"].startswith("pulumi:providers")]
    expected = {(kind, name) for kind, name in expected_resources() if kind.startswith("kubernetes:")}
    assert {(r["type"], r["urn"].split("::")[-1]) for r in objects} == expected
    for obj in objects:
        kind, meta = obj["outputs"]["kind"], obj["outputs"]["metadata"]
        args = ["get", kind, meta["name"], "-o", "name"] + (["-n", meta["namespace"]] if meta.get("namespace") else [])
        assert kubectl(stack.env, *args, check=False).returncode == 0, f"{kind} {meta['name']} is not in the cluster"


def test_3_a_pod_answers_through_the_service_exactly_as_onnx_runtime_does_in_every_form(stack: Stack) -> None:
    out = stack.outputs()
    body = validation_body(stack, out["modelDigest"])
    answer = http_json(f"{service_url(stack)}/v2/models/digits/infer", json.dumps(body).encode())
    # The same row through ONNX Runtime in this process, on one thread as in the pod (CPU limit 1).
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(artifact_dir(stack, out["modelDigest"]) / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    (given,) = body["inputs"]
    expected = session.run(None, {given["name"]: np.asarray(given["data"], np.float32).reshape(given["shape"])})
    (output,) = answer["outputs"]
    served = np.asarray(output["data"], np.float32).reshape(output["shape"])
    assert np.array_equal(served, expected[0]), (served, expected[0])
    # The protocol's other forms through the same Service, from Triton's client: REST with binary tensors
    # on the REST port, gRPC on serving.grpcPort (a Service port of its own, h2c).
    x = np.asarray(given["data"], np.float32).reshape(given["shape"])
    host = cluster_ip(stack.env, namespace(stack), "digits")
    for client, module, port in ((triton_http.InferenceServerClient, triton_http, 8080),
                                 (triton_grpc.InferenceServerClient, triton_grpc, 8081)):
        tensor = module.InferInput(given["name"], list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client(f"{host}:{port}").infer("digits", [tensor])
        assert np.array_equal(result.as_numpy(output["name"]), expected[0]), module.__name__

    ns = namespace(stack)
    for pod in pods(stack.env, ns, "digits"):
        logs = kubectl(stack.env, "logs", "-n", ns, pod["metadata"]["name"]).output
        assert "listening on 0.0.0.0:8080" in logs, logs[-2000:]
    # The image's user and its read-only root, as the kubelet started it.
    probe = ("import os; print(os.getuid())\ntry:\n open('/probe', 'w')\nexcept OSError as e: print(e.strerror)")
    first = pods(stack.env, ns, "digits")[0]["metadata"]["name"]
    seen = kubectl(stack.env, "exec", "-n", ns, first, "--", "python", "-c", probe).output.split("\n")
    assert seen[:2] == ["10001", "Read-only file system"], seen


def prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    return http_json(f"{base}/api/v1/query?query={query}")["data"]["result"]


def test_4_prometheus_in_the_cluster_scrapes_the_pods_and_loads_the_alert_rules(stack: Stack) -> None:
    with port_forward(stack.env, namespace(stack), "service/prometheus", 9090) as base:
        deadline = time.monotonic() + 90  # the first scrape comes within one interval (15 s)
        while True:
            targets = [t for t in http_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
                       if t["labels"]["job"] == "digits"]
            if len(targets) == REPLICAS and all(t["health"] == "up" for t in targets):
                break
            assert time.monotonic() < deadline, targets
            time.sleep(2)
        answered = 'sum(modelstack_requests_total{job="digits",code="200"})'
        before = float((prometheus_query(base, answered) or [{"value": [0, "0"]}])[0]["value"][1])
        body = json.dumps(validation_body(stack, stack.outputs()["modelDigest"])).encode()
        for _ in range(5):
            http_json(f"{service_url(stack)}/v2/models/digits/infer", body)
        while True:  # the next scrapes see them
            after = float((prometheus_query(base, answered) or [{"value": [0, "0"]}])[0]["value"][1])
            if after >= before + 5:
                break
            assert time.monotonic() < deadline + 60, (before, after)
            time.sleep(2)
        groups = http_json(f"{base}/api/v1/rules")["data"]["groups"]
        alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
        assert {g["name"] for g in groups} >= {"modelstack.slo", "modelstack.latency"}
        assert len(alerts) >= 5, alerts
    FIGURES["4 prometheus"] = f"{len(targets)} serving targets up, requests counted {before:.0f} -> {after:.0f}, " \
                              f"{len(alerts)} alert rules loaded"


def test_5_nothing_changed_means_nothing_happens(stack: Stack) -> None:
    # With the policy pack, as scripts/pulumi.sh runs every preview and up; fast: twice the targets of
    # docs/benchmarks.md ("preview and no-op up: where the time goes"), so a busy machine still passes.
    preview = stack.pulumi("preview", "--expect-no-changes", *POLICY, timing="5 preview --expect-no-changes")
    assert re.search(r"\d+ unchanged", preview.output)
    before = rollout(stack)["metadata"]["generation"]
    up = stack.pulumi("up", "--yes", "--expect-no-changes", *POLICY, timing="5 up (no changes)")
    assert not re.search(r"^\s*[~+-]\s+\d+ to (update|create|delete)", up.output, re.M)
    assert rollout(stack)["metadata"]["generation"] == before
    assert preview.seconds <= NO_OP_CEILING_S["preview"], \
        f"a no-op preview with the policy pack took {preview.seconds:.1f} s (ceiling {NO_OP_CEILING_S['preview']} s)"
    assert up.seconds <= NO_OP_CEILING_S["up"], \
        f"a no-op up with the policy pack took {up.seconds:.1f} s (ceiling {NO_OP_CEILING_S['up']} s)"


def analysis_runs(stack: Stack, pod_hash: str) -> list[dict[str, Any]]:
    """The AnalysisRuns Argo Rollouts made for the pods of one revision, oldest first."""
    runs = kube_json(stack.env, "get", "analysisrun", "-n", namespace(stack),
                     "-l", f"rollouts-pod-template-hash={pod_hash}")["items"]
    return sorted(runs, key=lambda run: run["metadata"]["creationTimestamp"])


def measured(run: dict[str, Any]) -> str:
    """'error-ratio [0.31, 0.29] (Failed)': each metric's measured values and its outcome."""
    return "; ".join(f"{m['name']} {[_number(x.get('value', '')) for x in m.get('measurements', [])]} ({m['phase']})"
                     for m in run["status"].get("metricResults", []))


def _number(value: str) -> str:
    found = re.fullmatch(r"\[?([0-9.eE+-]+|NaN)?\]?", value)
    return found.group(1) or "none" if found else value


def test_6_a_recipe_change_goes_through_the_canary_under_load_without_a_failed_request(stack: Stack,
                                                                                        tmp_path: Path) -> None:
    old = stack.outputs()
    stable = rollout(stack)["status"]["stableRS"]
    stack.pulumi("config", "set", "recipe", "int8-static")
    preview = stack.pulumi("preview", "--diff", timing="6 preview --diff (recipe change)")
    assert "OptimizedModel digits: rebuild because recipe.quantize.mode: dynamic_int8 -> static_int8" in preview.output
    changed = set(re.findall(r"^\s*(?:~|\+-)\s*(\S+): \((?:update|replace)\)", preview.output, re.M))
    assert {"pulumi-python:dynamic:Resource", "docker-build:index:Image",
            "kubernetes:argoproj.io/v1alpha1:Rollout"} <= changed

    old_pods = [p["metadata"]["name"] for p in pods(stack.env, namespace(stack), "digits")]
    body = tmp_path / "infer.json"
    body.write_text(json.dumps(validation_body(stack, old["modelDigest"])))
    # Load through the Service for the whole update, until the old pods are gone: not one request may fail.
    # A connection per request, so the canary's pods get their share and the analysis has figures to judge.
    with Load(f"{service_url(stack)}/v2/models/digits/infer", body, tmp_path, reconnect=True) as load:
        up = stack.pulumi("up", "--yes", timing="6 up (recipe change: canary, under load)", timeout=1800)
        kubectl(stack.env, "wait", "--for=delete", "-n", namespace(stack), "--timeout=180s",
                *[f"pod/{name}" for name in old_pods], check=False)
    result = assert_no_failed_request(load)

    new = stack.outputs()
    assert new["modelDigest"] != old["modelDigest"] and new["image"] != old["image"]
    assert new["recipe"] == "int8-static"
    assert_rolled_out(stack, new["image"])
    promoted = rollout(stack)["status"]["stableRS"]
    assert promoted != stable
    (run,) = analysis_runs(stack, promoted)  # the step's analysis judged the new pods, and passed
    assert run["status"]["phase"] == "Successful", measured(run)
    assert "step 1/2" in up.output  # the pulumi up showed the canary's progress
    assert not {p["metadata"]["name"] for p in assert_running_on_the_node(stack, "digits", REPLICAS)} & set(old_pods)
    FIGURES["6 canary promoted under load"] = (
        f"up {stack.timings['6 up (recipe change: canary, under load)']:.0f} s (build, image, 50% for 60 s, 100%); "
        f"analysis: {measured(run)}; {result.summary()}")


FAULT_RATIO = 0.3  # serving.faultErrorRatio of the bad release: 30% of its answers are 500s


def test_7_a_misbehaving_canary_is_rolled_back_and_the_update_fails_in_one_line(stack: Stack,
                                                                                tmp_path: Path) -> None:
    before = rollout(stack)["status"]
    body = tmp_path / "infer.json"
    body.write_text(json.dumps(validation_body(stack, stack.outputs()["modelDigest"])))
    stack.pulumi("config", "set", "--path", "serving.faultErrorRatio", str(FAULT_RATIO), "--type", "float")
    try:
        with Load(f"{service_url(stack)}/v2/models/digits/infer", body, tmp_path, reconnect=True) as load:
            start = time.monotonic()
            up = stack.pulumi("up", "--yes", check=False, timing="7 up (bad canary: rolled back)", timeout=900)
            failed_s = time.monotonic() - start
            # The abort scales the canary to zero: wait until only the stable revision's pods serve.
            wait_for_replicas(stack, lambda n: n == REPLICAS and revisions(stack) == [before["stableRS"]] * n, 120)
            back_s = time.monotonic() - start
        assert up.returncode != 0
        lines = {ln.strip() for ln in up.output.splitlines() if ln.strip().startswith("error: canary of Rollout")}
        assert len(lines) == 1, up.output[-5000:]
        (line,) = lines
        assert re.search(r"rolled back: (error-ratio|latency-p99) measured [0-9.e-]+ on the new pods, above its "
                         r"limit [0-9.e-]+; the stable pods \(127\.0\.0\.1:\d+/modelstack/digits:", line), line
        assert "Traceback" not in up.output
        after = rollout(stack)["status"]
        assert after["stableRS"] == before["stableRS"] and after.get("abort") is True
        bad = after["currentPodHash"]
        runs = analysis_runs(stack, bad)
        assert runs and runs[-1]["status"]["phase"] == "Failed", [measured(r) for r in runs]
        # Only the canary's pods failed: a third of its requests at most, over the canary's share of the traffic.
        assert load.result is not None and load.result.requests > 0
        share = load.result.non_2xx / load.result.requests
        assert 0 < share < FAULT_RATIO * 0.75, load.result.summary()
        assert not any(load.result.socket_errors.values()), load.result.output
        # Unchanged config, same verdict, at once: the update still fails while the Rollout stays aborted.
        again = stack.pulumi("up", "--yes", check=False, timing="7 up again (still aborted)", timeout=300)
        assert again.returncode != 0 and "error: canary of Rollout" in again.output
    finally:
        stack.pulumi("config", "rm", "--path", "serving.faultErrorRatio")
    # Reverted: the Rollout's template is the stable one again, so Argo is Healthy without a new canary.
    stack.pulumi("up", "--yes", timing="7 up (reverted)", timeout=600)
    assert_rolled_out(stack, stack.outputs()["image"])
    assert revisions(stack) == [before["stableRS"]] * REPLICAS
    stack.pulumi("preview", "--expect-no-changes")
    why = re.search(r"rolled back: ([^;]+);", line)
    FIGURES["7 canary rolled back"] = (
        f"update failed {failed_s:.0f} s after up started, only stable pods {back_s:.0f} s; "
        f"{why.group(1) if why else line}; clients: {load.result.summary()} ({share:.1%} failed: "
        f"{FAULT_RATIO:.0%} of the canary's share)")


def assert_no_failed_request(load: Load) -> LoadResult:
    assert load.result is not None
    assert load.result.requests > 0, load.result.output
    assert load.result.non_2xx == 0 and not any(load.result.socket_errors.values()), load.result.output
    return load.result


def revisions(stack: Stack) -> list[str]:
    """The pod template hash of each serving pod (Argo's label): which revision serves."""
    return sorted(p["metadata"]["labels"].get("rollouts-pod-template-hash", "")
                  for p in pods(stack.env, namespace(stack), "digits"))


def serving_pods(stack: Stack) -> dict[str, int]:
    """Name -> restarts of each serving pod."""
    return {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
            for p in pods(stack.env, namespace(stack), "digits")}


def test_8_a_serving_pod_deleted_under_load_costs_no_request(stack: Stack, tmp_path: Path) -> None:
    body = tmp_path / "infer.json"
    body.write_text(json.dumps(validation_body(stack, stack.outputs()["modelDigest"])))
    victim = sorted(serving_pods(stack))[0]
    with Load(f"{service_url(stack)}/v2/models/digits/infer", body, tmp_path) as load:
        start = time.monotonic()
        kubectl(stack.env, "delete", "pod", victim, "-n", namespace(stack), "--wait=false")
        wait_for_replicas(stack, lambda n: n == REPLICAS and victim not in serving_pods(stack), 180)
        replaced_s = time.monotonic() - start
    result = assert_no_failed_request(load)
    FIGURES["8 pod deleted under load"] = f"replaced and gone in {replaced_s:.0f} s; {result.summary()}"


def test_9_containerd_and_the_kubelet_restarted_under_load_the_pods_keep_serving(stack: Stack,
                                                                                  tmp_path: Path) -> None:
    body = tmp_path / "infer.json"
    body.write_text(json.dumps(validation_body(stack, stack.outputs()["modelDigest"])))
    before = serving_pods(stack)
    with Load(f"{service_url(stack)}/v2/models/digits/infer", body, tmp_path) as load:
        times = {}
        for daemon in ("containerd", "kubelet"):
            start = time.monotonic()
            run([str(CLUSTER), "restart", daemon], stack.env, timeout=300).check()
            times[daemon] = time.monotonic() - start
        kubectl(stack.env, "wait", "--for=condition=Ready", f"node/{NODE}", "--timeout=60s")
        time.sleep(5)  # the kubelet's first sync after its restart
    result = assert_no_failed_request(load)
    assert serving_pods(stack) == before  # the same containers, never restarted: they kept serving
    FIGURES["9 containerd, kubelet restarted"] = (
        f"containerd {times['containerd']:.0f} s, kubelet {times['kubelet']:.0f} s to ready; pods kept "
        f"serving (same pods, 0 restarts); {result.summary()}")


def test_10_an_api_server_restart_during_a_no_op_up_leaves_a_sound_state(stack: Stack) -> None:
    up = subprocess.Popen(["pulumi", "up", "--yes", "--stack", stack.name, "--non-interactive"], cwd=REPO,
                          env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)  # the engine has started and talks to the API server
    restart = run([str(CLUSTER), "restart", "kube-apiserver"], stack.env, timeout=300).check()
    output, _ = up.communicate(timeout=600)
    # Either it finished, or it failed with the provider's error naming the API server: never a crash.
    assert up.returncode == 0 or "error:" in output, output[-3000:]
    assert "panic:" not in output and "Traceback" not in output, output[-3000:]
    preview = stack.pulumi("preview", "--expect-no-changes", timing="10 preview after the API server restart")
    assert re.search(r"\d+ unchanged", preview.output)
    FIGURES["10 API server restarted during up"] = (
        f"up {'succeeded' if up.returncode == 0 else 'failed cleanly'}; "
        f"{restart.output.strip().splitlines()[-1].removeprefix('local-cluster: ')}; the next preview: no changes")


def hpa_replicas(stack: Stack, name: str = "digits") -> tuple[int, int]:
    """(current, desired) replicas of the serving HPA, as the controller manager last set them."""
    status = kube_json(stack.env, "get", "hpa", name, "-n", namespace(stack)).get("status", {})
    return int(status.get("currentReplicas", 0)), int(status.get("desiredReplicas", 0))


def wait_for_replicas(stack: Stack, done: Callable[[int], bool], limit_s: float, hpa: str | None = None) -> float:
    """Seconds until the Rollout's ready replicas satisfy `done` (and the HPA named `hpa`'s count too)."""
    start = time.monotonic()
    while True:
        ready = int(rollout(stack)["status"].get("readyReplicas", 0))
        if done(ready) and (not hpa or done(hpa_replicas(stack, hpa)[0])):
            return time.monotonic() - start
        assert time.monotonic() - start < limit_s, (ready, hpa_replicas(stack, hpa) if hpa else None)
        time.sleep(1)


def scaled_under_load(stack: Stack, tmp_path: Path, hpa: str, connections: int, delay_ms: int) -> str:
    """From 1 replica, a load through the Service until `hpa` runs at least 2, then 1 again: the figures."""
    wait_for_replicas(stack, lambda n: n == 1, 180, hpa=hpa)
    body = tmp_path / "infer.json"
    body.write_text(json.dumps(validation_body(stack, stack.outputs()["modelDigest"])))
    url = f"{service_url(stack)}/v2/models/digits/infer"
    with Load(url, body, tmp_path, connections=connections, delay_ms=delay_ms) as load:
        up_s = wait_for_replicas(stack, lambda n: n >= 2, 240, hpa=hpa)
        peak = hpa_replicas(stack, hpa)[1]
    result = assert_no_failed_request(load)
    down_s = wait_for_replicas(stack, lambda n: n == 1, 300, hpa=hpa)
    return f"1 -> {peak} replicas {up_s:.0f} s into the load ({result.summary()}); back to 1 {down_s:.0f} s after it"


def test_11_the_hpa_scales_on_real_cpu_figures_and_back(stack: Stack, tmp_path: Path) -> None:
    # metrics-server reads the pods' CPU from the kubelet; the HPA targets 50% of the 100m request.
    for key, value in {"enabled": "true", "minReplicas": "1", "maxReplicas": "3", "targetCpuUtilization": "50",
                       "scaleDownWindowS": "15"}.items():  # --path stores true and numbers typed
        stack.pulumi("config", "set", "--path", f"serving.autoscaling.{key}", value)
    stack.pulumi("up", "--yes", timing="11 up (autoscaling on)", timeout=900)
    FIGURES["11 autoscaling"] = scaled_under_load(stack, tmp_path, "digits", connections=4, delay_ms=5)


def test_12_keda_scales_on_the_requests_in_the_servers_and_back(stack: Stack, tmp_path: Path) -> None:
    # KEDA reads the requests in the servers (request-seconds per second over a minute: Little's law) from
    # the stack's Prometheus and asks for a replica per 0.2 of them: the digits model answers in about 70 us,
    # so eight busy connections keep about half a request in one server. Its HPA (keda-hpa-digits) replaces
    # the CPU one.
    # KEDA's admission webhook refuses a ScaledObject while another HPA scales the workload, and Pulumi
    # deletes the old HPA only after it created the new object: autoscaling off for one update first
    # (docs/configuration.md).
    stack.pulumi("config", "set", "--path", "serving.autoscaling.enabled", "false")
    stack.pulumi("up", "--yes", timing="12 up (autoscaling off)", timeout=900)
    stack.pulumi("config", "set", "--path", "serving.autoscaling.enabled", "true")
    stack.pulumi("config", "set", "--path", "serving.autoscaling.metric", "queue")
    stack.pulumi("config", "set", "--path", "serving.autoscaling.targetQueueDepth", "0.2", "--type", "float")
    stack.pulumi("up", "--yes", timing="12 up (queue autoscaling: KEDA)", timeout=900)
    assert kubectl(stack.env, "get", "hpa", "digits", "-n", namespace(stack), check=False).returncode != 0
    # Eight connections that never wait.
    FIGURES["12 queue autoscaling (KEDA)"] = scaled_under_load(stack, tmp_path, "keda-hpa-digits", connections=8,
                                                               delay_ms=0)


def test_13_a_failed_gate_fails_the_update_before_any_image(stack: Stack, tmp_path: Path) -> None:
    before = stack.outputs()
    tags = registry_tags(stack.env["MODELSTACK_REGISTRY"], REPOSITORY)
    recipe = tmp_path / "prune90.yaml"
    recipe.write_text(json.dumps(FAILING_RECIPE))
    stack.pulumi("config", "set", "recipe", str(recipe))
    try:
        up = stack.pulumi("up", "--yes", check=False, timing="13 up (failing gate)", timeout=1800)
    finally:
        stack.pulumi("config", "set", "recipe", "int8-static")
    assert up.returncode != 0
    reasons = [line.strip() for line in up.output.splitlines() if "accuracy gate failed" in line]
    assert reasons, up.output[-3000:]
    assert "Traceback" not in up.output, up.output[max(0, up.output.find("Traceback") - 1500):][:5000]
    assert registry_tags(stack.env["MODELSTACK_REGISTRY"], REPOSITORY) == tags  # no image was pushed
    assert rollout(stack)["spec"]["template"]["spec"]["containers"][0]["image"] == before["image"]
    assert stack.outputs()["image"] == before["image"]


def test_14_a_fine_tuned_build_shows_its_training_and_a_second_up_trains_nothing(stack: Stack,
                                                                                tmp_path: Path) -> None:
    before = stack.outputs()
    recipe = tmp_path / "structured-finetune.yaml"
    recipe.write_text(json.dumps(FINETUNE_RECIPE))
    model = {k: stack.pulumi("config", "get", "--path", f"model.{k}").output.strip() for k in ("source", "format")}
    try:
        for key, value in STATE_DICT_MODEL.items():
            stack.pulumi("config", "set", "--path", f"model.{key}", value)
        stack.pulumi("config", "set", "recipe", str(recipe))
        preview = stack.pulumi("preview", "--diff", timing="14 preview --diff (fine-tuned build)")
        assert "recipe.prune.method: none -> structured" in preview.output, preview.output[-3000:]
        up = stack.pulumi("up", "--yes", timing="14 up (structured pruning, fine-tune, canary)", timeout=1800)
        # The provider's progress reaches pulumi up: the training steps, then the stages after them.
        assert "OptimizedModel digits: finetune: step 1000/1000" in up.output, up.output[-3000:]
        assert "OptimizedModel digits: validate" in up.output
        after = stack.outputs()
        assert after["recipe"] == FINETUNE_RECIPE["name"] and after["modelDigest"] != before["modelDigest"]
        assert after["agreement"] >= 0.98
        assert_rolled_out(stack, after["image"])
        again = stack.pulumi("up", "--yes", "--expect-no-changes", timing="14 up again (nothing to train)")
        assert "OptimizedModel digits: finetune" not in again.output  # nothing built, nothing trained
    finally:
        for key, value in model.items():
            stack.pulumi("config", "set", "--path", f"model.{key}", value)
        for key in ("factory", "trainingData"):
            stack.pulumi("config", "rm", "--path", f"model.{key}")
        stack.pulumi("config", "set", "recipe", "int8-static")
    FIGURES["14 fine-tuned build"] = (
        f"up {stack.timings['14 up (structured pruning, fine-tune, canary)']:.0f} s (build with 1000 training "
        f"steps, image, canary); agreement {after['agreement']:.4f}; second up "
        f"{stack.timings['14 up again (nothing to train)']:.1f} s")


PRIVILEGED_POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged-probe"},
    "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
}


def test_15_the_api_server_refuses_a_privileged_pod_in_the_namespace(stack: Stack, tmp_path: Path) -> None:
    ns = kube_json(stack.env, "get", "namespace", namespace(stack))
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(PRIVILEGED_POD))
    result = kubectl(stack.env, "apply", "-n", namespace(stack), "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.output and "privileged" in result.output
    # The same pod is accepted where nothing is enforced: it is the namespace's policy that refused it.
    accepted = kubectl(stack.env, "apply", "-n", "default", "-f", str(manifest), "--dry-run=server", check=False)
    assert accepted.returncode == 0, accepted.output


# Run in a pod: resolve the Service (CoreDNS, a pod of kube-system, answers), then ask the server.
PROBE = """import socket, sys, urllib.request
host = sys.argv[1].split("/")[2].split(":")[0]
print("resolved", socket.gethostbyname(host))
try:
    urllib.request.urlopen(sys.argv[1], timeout=3)
    print("allowed")
except OSError as e:
    print("refused", type(e).__name__)
"""


# The same for a bare TCP connection to port 443 of a host name.
CONNECT = """import socket, sys
print("resolved", socket.gethostbyname(sys.argv[1]))
try:
    socket.create_connection((sys.argv[1], 443), timeout=3).close()
    print("allowed")
except OSError as e:
    print("refused", type(e).__name__)
"""


def probe(stack: Stack, namespace_: str, url: str, tmp_path: Path, script: str = PROBE) -> str:
    """What a pod in `namespace_` (the serving image, restricted) gets from `url`: its log."""
    name = f"netpol-probe-{int(time.monotonic() * 1000) % 100000}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace_}, "spec": {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "probe", "image": stack.outputs()["image"], "command": ["python", "-c", script, url],
                        "resources": {"limits": {"cpu": "100m", "memory": "128Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True}}]}}
    manifest = tmp_path / f"{name}.json"
    manifest.write_text(json.dumps(pod))
    kubectl(stack.env, "apply", "-f", str(manifest))
    kubectl(stack.env, "wait", "-n", namespace_, f"pod/{name}", "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=120s")
    return kubectl(stack.env, "logs", "-n", namespace_, name).output


def test_16_the_network_policy_is_enforced_other_namespaces_are_refused(stack: Stack, tmp_path: Path) -> None:
    """kube-router's network-policy controller (local-cluster/) enforces what the stack renders."""
    url = f"http://digits.{namespace(stack)}.svc.cluster.local:8080/v2/health/ready"
    outsider = f"{namespace(stack)}-outsider"
    kubectl(stack.env, "create", "namespace", outsider)
    try:
        start = time.monotonic()
        refused = probe(stack, outsider, url, tmp_path)
        refused_s = time.monotonic() - start
        allowed = probe(stack, namespace(stack), url, tmp_path)
    finally:
        kubectl(stack.env, "delete", "namespace", outsider, "--wait=false")
    # The outsider reached CoreDNS (a pod without a policy), and then not the server.
    assert "resolved 10.96." in refused and "\nrefused" in refused, refused
    assert "\nallowed" in allowed, allowed
    # Out of a serving pod: the cluster DNS answers, nothing else does (its egress is DNS only), not even the
    # API server, which a pod without a policy beside it reaches.
    api = "kubernetes.default.svc.cluster.local"
    server = pods(stack.env, namespace(stack), "digits")[0]["metadata"]["name"]
    egress = kubectl(stack.env, "exec", "-n", namespace(stack), server, "--", "python", "-c", CONNECT, api).output
    assert "resolved 10.96." in egress and "\nrefused" in egress, egress
    assert "\nallowed" in probe(stack, namespace(stack), api, tmp_path, CONNECT)
    # The stack's Prometheus (same namespace) still scrapes every serving pod through the policy.
    with port_forward(stack.env, namespace(stack), "service/prometheus", 9090) as base:
        targets = http_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
    serving = [t for t in targets if t["labels"].get("job") == "digits"]
    assert serving and all(t["health"] == "up" for t in serving), serving
    FIGURES["16 NetworkPolicy"] = (
        f"from {outsider}: {refused.splitlines()[-1]} (after {refused_s:.0f} s, pod start included); "
        f"from {namespace(stack)}: allowed; out of a serving pod: {egress.splitlines()[-1]}; Prometheus: "
        f"{len(serving)} serving targets up")


def test_17_destroy_leaves_nothing_then_the_stack_is_removed(stack: Stack) -> None:
    stack.pulumi("destroy", "--yes", timing="17 destroy", timeout=900)
    ns = kubectl(stack.env, "get", "namespace", namespace(stack), check=False)
    assert ns.returncode != 0 and "NotFound" in ns.output
    left = kubectl(stack.env, "get", "all,configmap,secret,serviceaccount,networkpolicy,role,rolebinding",
                   "-A", "-l", f"app.kubernetes.io/instance={namespace(stack)}", "-o", "name")
    assert left.output.strip() in ("", "No resources found"), left.output
    stack.pulumi("stack", "rm", "--yes")
    listed = run(["pulumi", "stack", "ls", "--non-interactive"], stack.env).check().output
    assert stack.name not in listed.split()

