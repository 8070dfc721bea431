"""What the OptimizedModel provider does, as plain functions (no Pulumi imports).

- `describe_changes`: why a rebuild happens, one line per changed input
  ("recipe.quantize.mode: dynamic_int8 -> static_int8"); only content digests
  and the recipe count, so it is cheap and side-effect free during preview.
- `build_and_publish`: run the optimize pipeline (accuracy gate included) in a
  scratch directory and publish the artifact atomically; a build whose inputs
  were built before is a cache hit that only reads the published report.

The build key (sha256 of the content inputs) maps to the artifact digest in
the store, so every stack that builds the same thing shares one artifact.

`report_user_errors_in_one_line` makes the engine's provider process show a
user's mistake (a missed gate, a model file that changed) as its message
instead of a Python traceback.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from live.rollout import RolloutFailed
from optimize.errors import OptimizeError
from optimize.recipe import RecipeError
from policy.rules import gate_table

from .store import ArtifactStoreError, open_store, sha256_file

# Inputs that change what gets built; a change in any of them rebuilds.
CONTENT_KEYS = ("modelName", "sourceSha256", "factory", "recipe", "validationSha256", "calibrationSha256",
                "trainingSha256", "toolVersions")
# Inputs that change where the artifact lives; a change republishes (usually a cache hit).
LOCATION_KEYS = ("storeUri", "storeRegion", "storeEndpoint")
ARTIFACT_FILES = ("model.onnx", "report.json", "summary.md", "chart.png")


class InputChanged(RuntimeError):
    """A model or data file is not what the plan was made with."""


# What the user fixes (a missed gate, a bad model file or recipe, a store it cannot reach, a file
# changed since preview, a canary its analysis rolled back): shown as its one-line message. Anything
# else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    OptimizeError, RecipeError, ArtifactStoreError, InputChanged, RolloutFailed)


def build_key(props: dict[str, Any]) -> str:
    canonical = json.dumps({k: props.get(k) for k in CONTENT_KEYS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def describe_changes(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """Human-readable differences of the inputs that matter, as dotted paths."""
    lines: list[str] = []
    for key in (*CONTENT_KEYS, *LOCATION_KEYS):
        _diff(key, olds.get(key), news.get(key), lines)
    return lines


def _diff(path: str, old: Any, new: Any, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _diff(f"{path}.{key}", old.get(key), new.get(key), out)
    elif old != new:
        out.append(f"{path}: {_short(old)} -> {_short(new)}")


def _short(value: Any) -> str:
    text = "(none)" if value is None else str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def build_and_publish(props: dict[str, Any]) -> dict[str, Any]:
    """Build (or find) the artifact for `props` and return the resource's outputs."""
    project_dir = Path(props["projectDir"])  # already on sys.path: the provider's _worker put it there
    store = open_store(props["storeUri"], project_dir, props.get("storeRegion"), props.get("storeEndpoint"))
    key = build_key(props)
    digest = store.lookup(key)
    if digest is not None and store.manifest(digest) is not None:
        report = json.loads(store.read(digest, "report.json"))
        return _outputs(props, report, store.uri(digest), key, cache_hit=True)

    source = _verified(project_dir, props["sourcePath"], props["sourceSha256"], "model.source")
    validation = _optional(project_dir, props, "validation")
    calibration = _optional(project_dir, props, "calibration")
    training = _optional(project_dir, props, "training")

    from optimize.pipeline import build
    from optimize.recipe import Recipe

    from .engine_log import progress_logger

    scratch = Path(tempfile.mkdtemp(prefix="modelstack-build-"))
    try:
        out = scratch / "artifact"
        report = build(source, Recipe.from_dict(props["recipe"]), out, validation=validation,
                       calibration=calibration, factory=props.get("factory"), name=props["modelName"],
                       training=training, progress=progress_logger(f"OptimizedModel {props['modelName']}"))  # fmt: skip
        files = {name: out / name for name in ARTIFACT_FILES if (out / name).is_file()}
        uri = store.publish(report["digest"], files)
        store.record(key, report["digest"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _outputs(props, report, uri, key, cache_hit=False)


def _verified(project_dir: Path, relative: str, expected: str, what: str) -> Path:
    path = Path(relative) if Path(relative).is_absolute() else project_dir / relative
    actual = sha256_file(path)
    if actual != expected:
        raise InputChanged(f"{what} '{relative}' changed since the plan was made (sha256 {actual[:12]}, planned "
                           f"{expected[:12]}); run `pulumi preview` again")
    return path


def _optional(project_dir: Path, props: dict[str, Any], kind: str) -> Path | None:
    relative = props.get(f"{kind}Path")
    if not relative:
        return None
    return _verified(project_dir, relative, props[f"{kind}Sha256"], f"model.{kind}Data")


def _outputs(props: dict[str, Any], report: dict[str, Any], uri: str, key: str, cache_hit: bool) -> dict[str, Any]:
    """The resource's outputs. Every gate figure of the first output (policy/rules/gate_table.py CHECKS) is
    exported, with the task the build judged it as (report.json's `fidelity.task`) and the recipe metric's
    figures (`metrics`): a stack promoting this model judges the figures its gate needs
    (components/release.py, policy/rules/model.py). A figure the build did not measure is None; a report
    from before builds were task-aware has no task, and is judged as a classifier, as it was built."""
    accuracy = report.get("accuracy") or {}
    fidelity = report.get("fidelity") or {}
    latency = report.get("latency_ms") or {}
    optimized_b1 = (latency.get("optimized") or {}).get("b1") or {}
    baseline_b1 = (latency.get("baseline") or {}).get("b1") or {}
    return {
        **props,
        "digest": report["digest"],
        "artifactUri": uri,
        "buildKey": key,
        "cacheHit": cache_hit,
        "sizeRatio": report.get("size_ratio"),
        **{check.output: accuracy.get(check.figure) for check in gate_table.CHECKS},
        "task": fidelity.get("task"),
        gate_table.METRICS_OUTPUT: (fidelity.get("metric") or {}).get("figures"),
        "latencyP50Ms": optimized_b1.get("p50"),
        "latencyP99Ms": optimized_b1.get("p99"),
        "baselineLatencyP50Ms": baseline_b1.get("p50"),
    }


class _OneLineForUserErrors:
    """The `traceback` module as the provider server uses it, with format_exc() giving only the message
    of a USER_ERRORS exception."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def format_exc(self, *args: Any, **kwargs: Any) -> str:
        exc = sys.exc_info()[1]
        if isinstance(exc, USER_ERRORS):
            return str(exc)
        return self._module.format_exc(*args, **kwargs)


def report_user_errors_in_one_line() -> None:
    """The engine's dynamic-provider server (pulumi.dynamic.__main__) answers every exception with
    traceback.format_exc(), so a missed accuracy gate reached the user as a Python traceback. In that
    process only, let it format USER_ERRORS as their message. Idempotent; anywhere else a no-op."""
    server = sys.modules.get("__main__")
    if getattr(getattr(server, "__spec__", None), "name", None) != "pulumi.dynamic.__main__":
        return
    module = getattr(server, "traceback", None)
    if isinstance(module, ModuleType):
        server.traceback = _OneLineForUserErrors(module)  # type: ignore[union-attr]
