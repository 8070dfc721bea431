"""Run the whole Pulumi program under `pulumi.runtime.set_mocks` for a stack file.

The stack file's values go through `set_all_config` the way the engine passes
them (objects JSON-encoded, project-level defaults from Pulumi.yaml applied,
secrets marked secret), the program runs in-process, and every registration
is recorded with its type, name, inputs, parent and dependencies.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.stack import Stack, run_pulumi_func, wait_for_rpcs
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "modelstack"


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    dependencies: list[str]
    custom: bool
    provider: str
    secret_inputs: bool


@dataclass
class ProgramRun:
    stack: str
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    error: BaseException | None = None

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, got {[r.name for r in found]}"
        return found[0]

    def named(self, name: str) -> Registered:
        (found,) = [r for r in self.resources if r.name == name]
        return found

    def serving_workload(self) -> Registered:
        """The serving pods' owner: a Deployment (rolling) or an Argo Rollout (canary)."""
        return next(r for r in self.resources if r.name in ("serving-deployment", "serving-rollout"))

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)


class _Mocks(pulumi.runtime.Mocks):
    """Resources echo their inputs as outputs with a predictable id."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ.startswith("kubernetes:") and "metadata" in outputs:
            meta = dict(outputs["metadata"] or {})
            meta.setdefault("name", f"{args.name}-mock")  # what auto-naming would give
            outputs["metadata"] = meta
        outputs.update(_computed_outputs(args.typ, args.name, outputs))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return dict(MOCK_INVOKES.get(args.token, {})), []  # [] = no check failures


# What real providers compute (outputs that are not inputs), for the types the program uses.
MOCK_ACCOUNT = "123456789012"
MOCK_INVOKES: dict[str, dict[str, Any]] = {
    "aws:eks/getCluster:getCluster": {"vpcConfig": {"subnetIds": ["subnet-0a", "subnet-0b"]}},
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": {
        "userName": "AWS", "password": "mock-ecr-token-3c9d", "proxyEndpoint": "https://mock"},
}


def _computed_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if typ == "aws:ecr/repository:Repository":
        host = f"{MOCK_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com"
        return {"registryId": MOCK_ACCOUNT, "repositoryUrl": f"{host}/{inputs.get('name', name)}",
                "arn": f"arn:aws:ecr:us-west-2:{MOCK_ACCOUNT}:repository/{inputs.get('name', name)}"}
    if typ == "aws:iam/role:Role":
        return {"arn": f"arn:aws:iam::{MOCK_ACCOUNT}:role/{name}", "name": inputs.get("name", name)}
    if typ == "pulumi-python:dynamic:Resource":  # OptimizedModel, as if its build had run
        digest = hashlib.sha256(f"{name}:{inputs.get('buildKey') or inputs.get('recipe')}".encode()).hexdigest()
        return {"digest": digest, "artifactUri": f"{inputs.get('storeUri')}/{digest}", "cacheHit": False,
                "sizeRatio": 0.27, "accuracyDelta": 0.0, "agreement": 1.0, "task": "classification",
                "cosineMean": 1.0, "cosineMin": 1.0, "relativeError": 0.0, "latencyP50Ms": 0.8,
                "latencyP99Ms": 1.6, "baselineLatencyP50Ms": 3.1}
    if typ == "docker-build:index:Image" and inputs.get("tags"):  # what the push reports
        tag = inputs["tags"][0]
        return {"ref": f"{tag}@sha256:{hashlib.sha256(tag.encode()).hexdigest()}",
                "digest": f"sha256:{hashlib.sha256(tag.encode()).hexdigest()}"}
    return {}


def _mock_pin(ref: str, timeout_s: float = 5.0) -> str:
    """A loopback registry tag pinned as if the registry had answered (image_ref is tested on its own
    against a real registry): the fast layer runs with no cluster."""
    return ref if "@sha256:" in ref else f"{ref}@sha256:{hashlib.sha256(ref.encode()).hexdigest()}"


def _mock_context(_args: Any, digest: str) -> str:
    """ServingImage's build context without fetching an artifact (the real one is tested on its own)."""
    return str(ROOT / ".modelstack" / "mock-contexts" / digest[:16])


class _RecordingMonitor(mocks.MockMonitor):
    """A mock monitor that also keeps what the real engine would see of each registration."""

    def __init__(self, run: ProgramRun):
        super().__init__(_Mocks())
        self.run = run

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs, has_secret = rpc.deserialize_properties_unwrap_secrets(request.object)
            self.run.resources.append(Registered(
                urn=response.urn, type=request.type, name=request.name, inputs=inputs,
                parent=request.parent, dependencies=list(request.dependencies), custom=request.custom,
                provider=request.provider, secret_inputs=has_secret,
            ))
        return response

    def ReadResource(self, request: Any) -> Any:
        """Reads (a StackReference) are in the graph too: recorded like registrations."""
        response = super().ReadResource(request)
        inputs, has_secret = rpc.deserialize_properties_unwrap_secrets(request.properties)
        self.run.resources.append(Registered(
            urn=response.urn, type=request.type, name=request.name, inputs=inputs, parent=request.parent,
            dependencies=list(request.dependencies), custom=True, provider=request.provider,
            secret_inputs=has_secret,
        ))
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn.split("::")[-2] == "pulumi:pulumi:Stack":
            for key, value in request.outputs.fields.items():
                plain, secret = rpc.deserialize_properties_unwrap_secrets(_wrap(key, value))
                self.run.outputs[key] = plain[key]
                if secret:
                    self.run.secret_outputs.add(key)
        return super().RegisterResourceOutputs(request)


def _wrap(key: str, value: Any) -> Any:
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.fields[key].CopyFrom(value)
    return s


def stack_config(stack: str) -> dict[str, Any]:
    """The `config:` block of Pulumi.<stack>.yaml."""
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    return dict(data.get("config") or {})


def engine_config(values: dict[str, Any]) -> dict[str, str]:
    """What the engine hands the program: project defaults applied, objects JSON-encoded."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    merged: dict[str, Any] = {}
    for key, decl in (project.get("config") or {}).items():
        default = decl.get("default") if isinstance(decl, dict) else decl
        if default is not None:
            merged[f"{PROJECT}:{key}"] = default
    merged.update(values)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in merged.items()}


def run_program(
    stack: str,
    config: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    preview: bool = False,
    raise_errors: bool = True,
) -> ProgramRun:
    """Run __main__.py for `stack` with `config` (default: Pulumi.<stack>.yaml) plus `secrets`.

    `secrets` are what `pulumi config set --secret KEY` would add. Exceptions
    from the program propagate (a pulumi.RunError for bad config), or with
    raise_errors=False land in `ProgramRun.error` next to what was registered.
    """
    values = stack_config(stack) if config is None else dict(config)
    secret_keys = []
    for key, value in (secrets or {}).items():
        values[f"{PROJECT}:{key}"] = value
        secret_keys.append(f"{PROJECT}:{key}")
    from components import image_ref, serving_image

    real_prepare, serving_image.prepare_context = serving_image.prepare_context, _mock_context
    real_pin, image_ref.pin = image_ref.pin, _mock_pin
    try:
        return run_mocked(stack, lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__pulumi__"),
                          engine_config(values), secret_keys, preview=preview, raise_errors=raise_errors)
    finally:
        serving_image.prepare_context = real_prepare
        image_ref.pin = real_pin


def run_mocked(
    stack: str,
    program: Callable[[], Any],
    config: dict[str, str] | None = None,
    secret_keys: list[str] | None = None,
    preview: bool = False,
    raise_errors: bool = True,
) -> ProgramRun:
    """Run `program` under the recording mock engine, as the engine would run a Pulumi program."""
    run = ProgramRun(stack=stack)
    _ensure_event_loop()  # other tests (ASGI clients) may have closed this thread's loop
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(_Mocks(), project=PROJECT, stack=stack, preview=preview,
                             monitor=_RecordingMonitor(run))
    if config is not None:
        pulumi.runtime.set_all_config(config, secret_keys or [])
    settings.SETTINGS.root_directory = str(ROOT)  # the engine sets it to the directory of Pulumi.yaml
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    # set_mocks finishes its root Stack at once; use a fresh one that registers
    # the program's exports when the program is done, as the engine's does.
    settings.set_root_resource(None)  # type: ignore[arg-type]
    root = Stack()
    try:
        _sync_await(run_pulumi_func(program))
    except Exception as exc:
        if raise_errors:
            raise
        run.error = exc
    finally:
        root._finish()
        _sync_await(wait_for_rpcs())
    return run


def make_stack_files_inputs() -> None:
    """What the stack files point at: the example models, made once as `make examples` does, and (local)
    the image's wheelhouse, which `make wheelhouse` downloads before the tests (they reach no index)."""
    import subprocess
    import sys

    from scripts import wheelhouse

    for name in ("digits", "text"):
        subprocess.run([sys.executable, "-m", f"examples.{name}.train", "--out", f"examples/{name}/build"],
                       cwd=ROOT, check=True)
    wheelhouse.require()
