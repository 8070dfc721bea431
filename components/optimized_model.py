"""OptimizedModel: the optimize pipeline as a Pulumi dynamic resource.

Inputs are content digests (source model, validation and calibration data),
the recipe, the tool versions and the artifact store; `diff` compares only
those, so preview is cheap and says why a rebuild happens. `create`/`update`
build, enforce the accuracy gate and publish atomically; `delete` keeps the
artifact, which other stacks may share (docs/artifacts.md: garbage collection).

The engine pickles the provider with dill and runs it in another process.
So the provider class holds no state and captures nothing: every method
imports the worker module (artifacts.build) when it runs, after
putting the project directory on sys.path. Torch is imported only there.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult

from artifacts.store import sha256_file
from policy.rules import gate_table

from .config import StackConfig
from .dynamic_provider import ProjectWorkerProvider, ship_by_value

# The gate's figures come from its table (policy/rules/gate_table.py): one definition for the build,
# promotion and the policy pack.
FIGURE_KEYS = (*(check.output for check in gate_table.CHECKS), "task", gate_table.METRICS_OUTPUT)
OUTPUT_KEYS = ("digest", "artifactUri", "buildKey", "cacheHit", "sizeRatio", *FIGURE_KEYS, "latencyP50Ms",
               "latencyP99Ms", "baselineLatencyP50Ms")
TOOL_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning")


class OptimizedModelProvider(ProjectWorkerProvider):
    @staticmethod
    def _worker(props: dict[str, Any]) -> Any:
        return ProjectWorkerProvider.import_worker(props, "artifacts.build")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        self._worker(news)
        from optimize.recipe import Recipe, RecipeError

        try:
            Recipe.from_dict(news.get("recipe"))
        except RecipeError as exc:
            return CheckResult(news, [CheckFailure("recipe", str(exc))])
        return CheckResult(news, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        import sys

        changes = self._worker(news).describe_changes(olds, news)
        # A dynamic provider has no diagnostics channel, but the engine prints its stderr in preview and
        # up: one line per reason (seen under the real CLI, where the property diff alone buries it).
        for change in changes:
            print(f"OptimizedModel {news.get('modelName')}: rebuild because {change}", file=sys.stderr, flush=True)
        return DiffResult(changes=bool(changes), replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._worker(props).build_and_publish(props)
        return CreateResult(id_=f"{props['modelName']}-{outs['buildKey'][:16]}", outs=outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        worker = self._worker(news)
        outs = worker.build_and_publish(news)
        outs["lastChange"] = "; ".join(worker.describe_changes(olds, news))
        return UpdateResult(outs=outs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Forget this stack's reference; the content-addressed artifact may serve other stacks."""


@dataclass(frozen=True)
class OptimizedModelArgs:
    model_name: str
    source_path: str
    source_sha256: str
    recipe: dict[str, Any]
    store_uri: str
    project_dir: str
    tool_versions: dict[str, str]
    factory: str | None = None
    validation_path: str | None = None
    validation_sha256: str | None = None
    calibration_path: str | None = None
    calibration_sha256: str | None = None
    training_path: str | None = None
    training_sha256: str | None = None
    store_region: str | None = None
    store_endpoint: str | None = None

    def __post_init__(self) -> None:
        if len(self.source_sha256) != 64:
            raise ValueError(f"OptimizedModelArgs.source_sha256 must be a sha256 digest, got {self.source_sha256!r}")

    @classmethod
    def from_config(cls, cfg: StackConfig) -> OptimizedModelArgs:
        """Digests come from the files now (or from the config's pin), so preview sees content changes."""
        m, a = cfg.model, cfg.artifacts
        if m is None:
            raise ValueError("OptimizedModelArgs.from_config: the stack promotes its model (modelstack:promote); "
                             "it builds none")

        def digest(path: str | None) -> str | None:
            return None if path is None else sha256_file(cfg.path(path))

        return cls(
            model_name=cfg.model_name,
            source_path=m.source,
            source_sha256=m.sha256 or sha256_file(cfg.path(m.source)),
            recipe=cfg.recipe.to_dict(),
            store_uri=a.store,
            store_region=a.region,
            store_endpoint=a.endpoint,
            project_dir=str(cfg.project_dir),
            tool_versions=tool_versions(cfg.project_dir),
            factory=m.factory,
            validation_path=m.validation_data,
            validation_sha256=digest(m.validation_data),
            calibration_path=m.calibration_data,
            calibration_sha256=digest(m.calibration_data),
            training_path=m.training_data,
            training_sha256=digest(m.training_data),
        )

    def props(self) -> dict[str, Any]:
        return {
            "modelName": self.model_name, "sourcePath": self.source_path, "sourceSha256": self.source_sha256,
            "factory": self.factory, "recipe": self.recipe, "validationPath": self.validation_path,
            "validationSha256": self.validation_sha256, "calibrationPath": self.calibration_path,
            "calibrationSha256": self.calibration_sha256, "trainingPath": self.training_path,
            "trainingSha256": self.training_sha256, "toolVersions": self.tool_versions,
            "storeUri": self.store_uri, "storeRegion": self.store_region, "storeEndpoint": self.store_endpoint,
            "projectDir": self.project_dir,
        }


class OptimizedModel(pulumi.dynamic.Resource):
    """The compressed, validated model artifact; outputs its digest, URI and measured figures."""

    digest: pulumi.Output[str]
    artifactUri: pulumi.Output[str]  # dynamic resource outputs keep their property names
    sizeRatio: pulumi.Output[float]
    accuracyDelta: pulumi.Output[float]
    agreement: pulumi.Output[float]
    task: pulumi.Output[str]  # what the gate judged it as (optimize/fidelity.py): it picks the figures below
    cosineMean: pulumi.Output[float]
    cosineMin: pulumi.Output[float]
    relativeError: pulumi.Output[float]
    sequenceExact: pulumi.Output[float]
    cer: pulumi.Output[float]
    cerIncrease: pulumi.Output[float]
    metrics: pulumi.Output[dict[str, float]]  # the recipe metric's figures (gate.metric)
    latencyP50Ms: pulumi.Output[float]
    latencyP99Ms: pulumi.Output[float]

    def __init__(self, name: str, args: OptimizedModelArgs, opts: pulumi.ResourceOptions | None = None):
        props: dict[str, Any] = {**args.props(), **dict.fromkeys(OUTPUT_KEYS), "lastChange": None}
        super().__init__(OptimizedModelProvider(), name, props, opts)


# The pipeline's code: what a build runs, and the gate table it judges by.
PIPELINE_CODE = ("optimize/*.py", "policy/rules/gate_table.py")
SYNTAX_CACHE = Path(".cache") / "pipeline-code.json"


def tool_versions(project_dir: Path) -> dict[str, str]:
    """Versions that change the artifact, read without importing torch; plus the pipeline's own code."""
    versions = {pkg: _version(pkg) for pkg in TOOL_PACKAGES}
    versions["optimize"] = pipeline_code_digest(project_dir)
    return versions


def pipeline_code_digest(project_dir: Path) -> str:
    """What the pipeline's code does, not how it reads: each module's syntax tree without its docstrings
    (comments are not in it), so editing a comment or a docstring rebuilds no stack's model. Parsing takes
    ~0.1 s, so each file's tree digest is kept by the sha256 of its text in the git-ignored .cache/."""
    cache_path = project_dir / SYNTAX_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    code, seen = hashlib.sha256(), {}
    for path in sorted(p for pattern in PIPELINE_CODE for p in project_dir.glob(pattern)):
        text = path.read_bytes()
        key = hashlib.sha256(text).hexdigest()
        cached = cache.get(key) if isinstance(cache, dict) else None
        seen[key] = cached if isinstance(cached, str) else _syntax_digest(text, path)
        code.update(path.relative_to(project_dir).as_posix().encode() + b"\0" + seen[key].encode() + b"\0")
    if seen != cache:
        try:  # a read-only checkout only loses the shortcut
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(seen, sort_keys=True))
            partial.replace(cache_path)
        except OSError:
            pass
    return code.hexdigest()[:16]


def _syntax_digest(text: bytes, path: Path) -> str:
    tree = ast.parse(text, filename=str(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):  # fmt: skip
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"



ship_by_value(OptimizedModelProvider)
