"""Follow an Argo Rollout until it settles: promoted (Healthy on the new revision) or aborted (rolled back).

Read through `kubectl get -o json`; what it reports comes from the Rollout's status and, for an abort, the
AnalysisRun that failed: the metric, the value it measured and the successCondition it missed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any


class RolloutFailed(RuntimeError):
    """The canary was rolled back, or the rollout did not settle in time: shown to the user as one line."""


def wait_for_rollout(namespace: str, name: str, *, context: str | None, timeout_s: float,
                     poll_s: float = 2.0) -> dict[str, Any]:
    """Wait until the Rollout `namespace/name` is promoted; raise RolloutFailed when it is aborted or late."""
    kubectl = Kubectl(context)
    start = time.monotonic()
    said = ""
    while True:
        rollout = kubectl.get("rollout", name, namespace)
        status = rollout.get("status") or {}
        seen = str(status.get("observedGeneration", "")) == str(rollout["metadata"].get("generation", ""))
        if seen and status.get("abort"):
            raise RolloutFailed(abort_message(kubectl, namespace, name, status))
        # A spec the controller refuses stays refused: say so at once (after a moment for it to see a new one).
        if str(status.get("message", "")).startswith("InvalidSpec") and (seen or time.monotonic() - start > 10):
            raise RolloutFailed(f"Rollout {namespace}/{name} was refused by the Argo Rollouts controller: "
                                f"{status['message']}")
        if seen and status.get("phase") == "Healthy" and status.get("stableRS") == status.get("currentPodHash"):
            return {"stableHash": status["stableRS"], "stableImage": stable_image(kubectl, namespace, name, status)}
        progress = describe(status, rollout) if seen else "waiting for the controller to see the new revision"
        if progress != said:  # the engine shows a provider's stderr under the resource
            print(f"Rollout {namespace}/{name}: {progress}", file=sys.stderr, flush=True)
            said = progress
        if time.monotonic() - start > timeout_s:
            raise RolloutFailed(f"Rollout {namespace}/{name} did not settle within {timeout_s:g} s ({progress}); "
                                f"see `kubectl -n {namespace} describe rollout {name}`, or raise "
                                "modelstack:serving.rollout.timeoutS")
        time.sleep(poll_s)


def describe(status: dict[str, Any], rollout: dict[str, Any]) -> str:
    steps = (((rollout.get("spec") or {}).get("strategy") or {}).get("canary") or {}).get("steps") or []
    step = status.get("currentStepIndex")
    where = f"step {step}/{len(steps)}" if step is not None and steps else "starting"
    weight = ((status.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight")
    replicas = f"{status.get('updatedReplicas', 0)}/{status.get('replicas', 0)} replicas new"
    text = f"{status.get('phase', 'Progressing')}, {where}, {replicas}"
    if weight is not None:
        text += f", weight {weight}"
    return text + (f": {status['message']}" if status.get("message") else "")


def abort_message(kubectl: Kubectl, namespace: str, name: str, status: dict[str, Any]) -> str:
    why = failed_metric(kubectl, namespace, status.get("currentPodHash", "")) or status.get("message", "aborted")
    image = stable_image(kubectl, namespace, name, status)
    return (f"canary of Rollout {namespace}/{name} rolled back: {why}; the stable pods ({image}) still serve. "
            "Fix the model or revert the change, then run `pulumi up` again")


def failed_metric(kubectl: Kubectl, namespace: str, pod_hash: str) -> str | None:
    """'error-ratio measured 0.31 on the new pods, above its limit 0.144' from the newest failed AnalysisRun."""
    runs = kubectl.list("analysisrun", namespace, f"rollouts-pod-template-hash={pod_hash}")
    runs.sort(key=lambda run: run["metadata"].get("creationTimestamp", ""), reverse=True)
    for run in runs:
        conditions = {m["name"]: m.get("successCondition", "") for m in (run.get("spec") or {}).get("metrics", [])}
        for result in (run.get("status") or {}).get("metricResults", []):
            if result.get("phase") not in ("Failed", "Error"):
                continue
            last = (result.get("measurements") or [{}])[-1]
            metric = result["name"]
            if result["phase"] == "Error":
                return f"{metric} could not be measured ({last.get('message') or result.get('message', 'error')})"
            limit = re.search(r"<=\s*([0-9.eE+-]+)\s*$", conditions.get(metric, ""))
            value = _number(last.get("value", "?"))
            above = f", above its limit {limit.group(1)}" if limit else f" (condition: {conditions.get(metric)})"
            return f"{metric} measured {value} on the new pods{above}"
    return None


def stable_image(kubectl: Kubectl, namespace: str, name: str, status: dict[str, Any]) -> str:
    stable = status.get("stableRS")
    if not stable:
        return "none yet"
    rs = kubectl.get("replicaset", f"{name}-{stable}", namespace)
    containers = rs["spec"]["template"]["spec"]["containers"]
    return ", ".join(c["image"] for c in containers)


def _number(value: str) -> str:
    """Prometheus answers '[0.3125]' for a one-element vector; show the number."""
    found = re.fullmatch(r"\[?\s*([0-9.eE+-]+|NaN)\s*\]?", str(value))
    if not found:
        return str(value)
    try:
        return f"{float(found.group(1)):.4g}"
    except ValueError:
        return found.group(1)


class Kubectl:
    def __init__(self, context: str | None) -> None:
        self.base = ["kubectl", *(["--context", context] if context else [])]

    def _json(self, *args: str) -> dict[str, Any]:
        done = subprocess.run([*self.base, *args, "-o", "json"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RolloutFailed(f"kubectl {' '.join(args)} failed: {last}")
        return json.loads(done.stdout)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return self._json("get", kind, name, "-n", namespace)

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self._json("get", kind, "-n", namespace, "-l", selector).get("items", []))
