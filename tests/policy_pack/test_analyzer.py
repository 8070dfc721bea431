"""The real pack, started by policy/analyzer in policy/.venv, answering the engine's gRPC calls."""

from __future__ import annotations

import json
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from tests.policy_pack import resources as r
from tests.policy_pack.policies import ADVISORY, MANDATORY, POLICIES

ROOT = Path(__file__).resolve().parents[2]
ANALYZER = ROOT / "policy" / "analyzer"
LEVELS = {MANDATORY: analyzer_pb2.MANDATORY, ADVISORY: analyzer_pb2.ADVISORY}
KINDS = {"resource": analyzer_pb2.POLICY_TYPE_RESOURCE, "stack": analyzer_pb2.POLICY_TYPE_STACK}
URN = "urn:pulumi:dev::modelstack::modelstack:index:ModelService$kubernetes:apps/v1:Deployment::serving-deployment"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    assert (ROOT / "policy" / ".venv" / "bin" / "python").exists(), "policy/.venv is missing: run `make policy-venv`"
    proc = subprocess.Popen([str(ANALYZER)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.strip().isdigit():
            proc.kill()
            pytest.fail(f"policy/analyzer printed no port: {line!r} {proc.communicate(timeout=10)[1].decode()}")
        with grpc.insecure_channel(f"127.0.0.1:{int(line)}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def struct(props: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(json.loads(json.dumps(props)))
    return s


def analyze(stub: analyzer_pb2_grpc.AnalyzerStub, type_: str, props: dict[str, Any]) -> list[Any]:
    request = analyzer_pb2.AnalyzeRequest(type=type_, properties=struct(props), urn=URN, name="serving-deployment")
    return list(stub.Analyze(request, timeout=30).diagnostics)


def test_the_pack_lists_every_policy_with_its_enforcement_level(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "modelstack"
    listed = {p.name: (p.enforcementLevel, p.policy_type) for p in info.policies}
    assert listed == {name: (LEVELS[level], KINDS[kind]) for name, (_, level, kind) in POLICIES.items()}


def test_analyze_reports_an_unpinned_image_as_mandatory(analyzer):
    hardened = r.deployment()
    assert analyze(analyzer, "kubernetes:apps/v1:Deployment", hardened) == []
    tagged = r.deployment()
    r.first_container(tagged)["image"] = "localhost:5000/modelstack/digits:v1"
    (diag,) = analyze(analyzer, "kubernetes:apps/v1:Deployment", tagged)
    assert diag.policyName == "image-pinned-by-digest" and diag.policyPackName == "modelstack"
    assert diag.enforcementLevel == analyzer_pb2.MANDATORY
    assert "spec.template.spec.containers[server].image 'localhost:5000/modelstack/digits:v1'" in diag.message


def test_analyze_skips_values_unknown_at_preview(analyzer):
    d = r.deployment()
    r.first_container(d)["image"] = r.UNKNOWN
    r.first_container(d)["securityContext"] = r.UNKNOWN
    # No violation, and no "can't run policy during preview" warning either.
    assert analyze(analyzer, "kubernetes:apps/v1:Deployment", d) == []


def test_analyze_blocks_a_promotion_below_the_gate_and_advises_on_one_replica(analyzer):
    (diag,) = analyze(analyzer, "pulumi-python:dynamic:Resource", r.promoted_model(agreement=0.984))
    assert diag.policyName == "model-meets-gate" and diag.enforcementLevel == analyzer_pb2.MANDATORY
    assert "model argmax agreement 0.9840 is below this stack's gate min_agreement 0.999" in diag.message
    (diag,) = analyze(analyzer, "kubernetes:apps/v1:Deployment", r.deployment(replicas=1.0))
    assert diag.policyName == "serving-replicas-for-availability" and diag.enforcementLevel == analyzer_pb2.ADVISORY


def test_analyze_judges_an_embedding_promotion_by_its_cosine(analyzer):
    # The pack's own venv (no numpy) runs the task-aware gate: argmax agreement 0.7 is no reason to block.
    good = r.promoted_model(agreement=0.7, accuracy_delta=None, task="embedding", cosineMean=0.999, cosineMin=0.99)
    assert analyze(analyzer, "pulumi-python:dynamic:Resource", good) == []
    (diag,) = analyze(analyzer, "pulumi-python:dynamic:Resource",
                      r.promoted_model(agreement=0.7, task="embedding", cosineMean=0.97))
    assert diag.policyName == "model-meets-gate" and diag.enforcementLevel == analyzer_pb2.MANDATORY
    assert "model mean cosine similarity 0.9700 is below this stack's gate min_cosine 0.99" in diag.message


def test_analyze_stack_judges_the_built_model_outputs(analyzer):
    model_urn = "urn:pulumi:dev::modelstack::pulumi-python:dynamic:Resource::model"
    resources = [
        analyzer_pb2.AnalyzerResource(type="pulumi-python:dynamic:Resource", urn=model_urn, name="model",
                                      properties=struct(r.optimized_model(agreement=0.95))),
        analyzer_pb2.AnalyzerResource(type="kubernetes:apps/v1:Deployment", urn=URN, name="serving-deployment",
                                      properties=struct(r.deployment())),
    ]
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources), timeout=30)
    (diag,) = response.diagnostics
    assert diag.policyName == "built-model-meets-gate" and diag.urn == model_urn
    assert "model argmax agreement 0.9500 is below this stack's gate min_agreement 0.99" in diag.message


def test_policy_pack_config_changes_an_enforcement_level(analyzer):
    # What `--policy-pack-config FILE` with {"image-pinned-by-digest": "advisory"} makes the engine send.
    advisory = analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.ADVISORY)
    tagged = r.deployment()
    r.first_container(tagged)["image"] = "localhost:5000/modelstack/digits:v1"
    try:
        analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(
            policyConfig={"image-pinned-by-digest": advisory}), timeout=30)
        (diag,) = analyze(analyzer, "kubernetes:apps/v1:Deployment", tagged)
        assert diag.policyName == "image-pinned-by-digest" and diag.enforcementLevel == analyzer_pb2.ADVISORY
    finally:
        analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(), timeout=30)
    (diag,) = analyze(analyzer, "kubernetes:apps/v1:Deployment", tagged)
    assert diag.enforcementLevel == analyzer_pb2.MANDATORY
