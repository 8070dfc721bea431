"""live/rollout.py on what Argo Rollouts writes: an AnalysisRun recorded from a rolled-back canary on the
local cluster (make e2e does the same for real), and Rollout statuses in the shapes its controller sets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from live import rollout as live
from live.rollout import RolloutFailed

FAILED_RUN = json.loads((Path(__file__).parent / "analysisrun-failed.json").read_text())
STABLE, CANARY = "55459585b8", "5dcb78f5dd"
IMAGE = "127.0.0.1:35000/modelstack/digits:31bdbd47539f-b4c2b878@sha256:" + "ab" * 32


class FakeKubectl:
    """What `kubectl get -o json` returns, object by object; each Rollout read gives the next status."""

    def __init__(self, rollouts: list[dict[str, Any]], runs: list[dict[str, Any]] = ()) -> None:
        self.rollouts, self.runs = list(rollouts), list(runs)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        if kind == "rollout":
            return self.rollouts.pop(0) if len(self.rollouts) > 1 else self.rollouts[0]
        assert (kind, name) == ("replicaset", f"digits-{STABLE}")
        return {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": IMAGE}]}}}}

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert kind == "analysisrun"
        label = "rollouts-pod-template-hash"
        return [r for r in self.runs if selector == f"{label}={r['metadata']['labels'][label]}"]


def rollout(generation: int, observed: int, **status: Any) -> dict[str, Any]:
    steps = [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "digits-4-checks"}]}}]
    return {"metadata": {"name": "digits", "generation": generation},
            "spec": {"strategy": {"canary": {"steps": steps}}},
            "status": {"observedGeneration": str(observed), "stableRS": STABLE, **status}}  # a string in Argo


@pytest.fixture
def wait(monkeypatch: pytest.MonkeyPatch):
    def run(kubectl: FakeKubectl, timeout_s: float = 30) -> dict[str, Any]:
        monkeypatch.setattr(live, "Kubectl", lambda context: kubectl)
        return live.wait_for_rollout("modelstack-local", "digits", context="modelstack-local", timeout_s=timeout_s,
                                     poll_s=0)
    return run


def test_a_promoted_canary_returns_the_stable_revision_and_image(wait, capsys):
    promoted = rollout(3, 3, phase="Healthy", currentPodHash=STABLE, currentStepIndex=2, replicas=2,
                       updatedReplicas=2)
    stale = rollout(3, 2, phase="Healthy", currentPodHash="0ld0ld0ld")  # the controller has not seen gen 3
    progressing = rollout(3, 3, phase="Progressing", currentPodHash=CANARY, currentStepIndex=1, replicas=3,
                          updatedReplicas=1, message="more replicas need to be updated")
    assert wait(FakeKubectl([stale, progressing, promoted])) == {"stableHash": STABLE, "stableImage": IMAGE}
    said = capsys.readouterr().err.splitlines()
    assert said == ["Rollout modelstack-local/digits: waiting for the controller to see the new revision",
                    "Rollout modelstack-local/digits: Progressing, step 1/2, 1/3 replicas new: "
                    "more replicas need to be updated"]


def test_an_aborted_canary_names_the_metric_its_value_and_the_limit(wait):
    aborted = rollout(4, 4, phase="Degraded", abort=True, currentPodHash=CANARY,
                      message='RolloutAborted: Rollout aborted update to revision 5: Metric "error-ratio" assessed '
                              "Failed due to failed (1) > failureLimit (0)")
    with pytest.raises(RolloutFailed) as failed:
        wait(FakeKubectl([aborted], [FAILED_RUN]))
    assert str(failed.value) == (
        "canary of Rollout modelstack-local/digits rolled back: error-ratio measured 0.2977 on the new pods, "
        f"above its limit 0.144; the stable pods ({IMAGE}) still serve. Fix the model or revert the change, "
        "then run `pulumi up` again")


def test_an_analysis_that_cannot_reach_prometheus_says_so(wait):
    run = copy.deepcopy(FAILED_RUN)
    run["status"]["metricResults"][0].update(phase="Error", measurements=[{
        "phase": "Error", "message": 'Post "http://prometheus.modelstack-local.svc.cluster.local:9090/api/v1/query": '
                                     "dial tcp: lookup prometheus.modelstack-local.svc.cluster.local: no such host"}])
    aborted = rollout(4, 4, phase="Degraded", abort=True, currentPodHash=CANARY, message="RolloutAborted")
    with pytest.raises(RolloutFailed, match=r"error-ratio could not be measured \(Post .*no such host\)"):
        wait(FakeKubectl([aborted], [run]))


def test_a_spec_the_controller_refuses_fails_at_once(wait):
    refused = rollout(2, 2, phase="Degraded", currentPodHash=STABLE,
                      message='InvalidSpec: The Rollout "digits" is invalid: spec.strategy.canary.steps[1]')
    with pytest.raises(RolloutFailed, match="refused by the Argo Rollouts controller: InvalidSpec"):
        wait(FakeKubectl([refused]))


def test_a_rollout_that_never_settles_fails_at_its_timeout_naming_the_key(wait):
    stuck = rollout(2, 2, phase="Paused", currentPodHash=CANARY, currentStepIndex=1, message="CanaryPauseStep")
    with pytest.raises(RolloutFailed, match=r"did not settle within 0\.2 s \(Paused, step 1/2.*timeoutS"):
        wait(FakeKubectl([stuck]), timeout_s=0.2)
