"""A release: what a stack that built its model publishes in its outputs, and a promoting stack deploys.

A promoting stack (`modelstack:promote.from`) builds nothing: it deploys exactly the model digest and
image digest its source stack tested. Those outputs are read and checked here, at config time, before
any resource is registered; each problem is one line naming the source stack and the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from optimize.recipe import GateSpec
from policy.rules.model import GATE_CHECKS, TOP1

DIGEST = re.compile(r"^[0-9a-f]{64}$")
# REGISTRY/REPO[:TAG]@sha256:DIGEST, as the ServingImage component exports it.
PINNED_IMAGE = re.compile(r"^(?P<repository>[^@\s]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})$")
FIGURES = ("sizeRatio", "agreement", "accuracyDelta", "latencyP50Ms", "latencyP99Ms")
# Exported since builds judge fidelity by task (optimize/fidelity.py). A source built before has none of
# them: it was gated on agreement and top-1 drop, and is judged as a classifier (LEGACY_TASK) here too.
TASK_FIGURES = ("cosineMean", "cosineMin", "relativeError")
# accuracyDelta is null without labels (an embedding model never has them), and the engine drops a null
# output: a source lacking it is a build without labels, not an incomplete stack.
OPTIONAL_FIGURES = ("accuracyDelta", *TASK_FIGURES)
REQUIRED = ("modelName", "modelDigest", "modelArtifact", "image", "gate",
            *(key for key in FIGURES if key not in OPTIONAL_FIGURES))
LEGACY_TASK = "classification"
# What the gate judges per task, (figure output, gate key, min|max): the policy pack's table, so promotion
# and the pack judge alike (tests/policy_pack/test_gate_table.py holds it to optimize/fidelity.py `checks`).
# A gate output written before a threshold existed gets the recipe's default for it.
GATE_DEFAULTS: dict[str, float] = {k: float(v) for k, v in GateSpec().model_dump().items() if k != "task"}
TOLERANCE = 1e-12  # float slack, as optimize/fidelity.py judges a build
READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"  # the engine's builtin behind pulumi.StackReference


@dataclass(frozen=True)
class SourceRelease:
    stack: str  # ORG/PROJECT/STACK
    model_name: str
    model_digest: str
    artifact_uri: str
    image: str  # pinned by digest
    gate: dict[str, float]  # the source's own gate, every threshold (GATE_DEFAULTS for those it lacks)
    figures: dict[str, Any]  # FIGURES, TASK_FIGURES (None where not measured) and `task`

    @property
    def task(self) -> str:
        return str(self.figures["task"])

    def _pinned(self, part: str) -> str | None:
        match = PINNED_IMAGE.match(self.image)  # parse_release checked it matches
        assert match, self.image
        return match[part]

    @property
    def image_digest(self) -> str:
        return str(self._pinned("digest"))

    @property
    def image_repository(self) -> str:
        return str(self._pinned("repository"))

    @property
    def image_tag(self) -> str | None:
        return self._pinned("tag")

    @property
    def registry_host(self) -> str:
        return self.image_repository.split("/", 1)[0]

    @property
    def summary(self) -> str:
        """The line preview prints: which stack, which model, which image."""
        return (f"promoted from {self.stack.rsplit('/', 1)[-1]}: model {self.model_digest[:12]}…, "
                f"image {self.image_digest[:19]}…")


def parse_release(stack: str, outputs: dict[str, Any]) -> SourceRelease:
    """The source stack's outputs as a release, or ValueError naming what is missing or wrong."""
    missing = [key for key in REQUIRED if key not in outputs]
    if missing:
        raise ValueError(f"stack '{stack}' has no output {', '.join(repr(k) for k in missing)}; promote from a stack "
                         "of this project that builds its model and has completed a `pulumi up`")
    digest, image, gate = outputs["modelDigest"], outputs["image"], outputs["gate"]
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise ValueError(f"stack '{stack}' output 'modelDigest' is not a sha256 digest: {digest!r}")
    if not isinstance(image, str) or not PINNED_IMAGE.match(image):
        raise ValueError(f"stack '{stack}' output 'image' is not pinned by digest (REPO:TAG@sha256:...): {image!r}")
    if not isinstance(gate, dict) or not {"min_agreement", "max_accuracy_drop"} <= set(gate):
        raise ValueError(f"stack '{stack}' output 'gate' is not a gate (min_agreement, max_accuracy_drop): {gate!r}")
    bad = [k for k in GATE_DEFAULTS if k in gate and _number(gate[k]) is None]
    if bad:
        raise ValueError(f"stack '{stack}' output 'gate' has a threshold that is not a number: "
                         f"{', '.join(f'{k}={gate[k]!r}' for k in bad)}")
    task = outputs.get("task")
    if task is not None and task not in GATE_CHECKS:
        raise ValueError(f"stack '{stack}' output 'task' is not one of {', '.join(GATE_CHECKS)}: {task!r}")
    task = task or LEGACY_TASK
    figures = {**{key: outputs.get(key) for key in (*FIGURES, *TASK_FIGURES)}, "task": task}
    failed = gate_failures(figures, gate)
    if failed:
        raise ValueError(f"stack '{stack}' model {digest[:12]} failed its gate ({task} model: {'; '.join(failed)}); "
                         "fix the source stack's build before promoting it")
    return SourceRelease(stack=stack, model_name=str(outputs["modelName"]), model_digest=digest,
                         artifact_uri=str(outputs["modelArtifact"]), image=image,
                         gate={k: float(gate.get(k, default)) for k, default in GATE_DEFAULTS.items()},
                         figures=figures)


def gate_failures(figures: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    """What of the figures misses the gate for the figures' `task` (as optimize/fidelity.py judges a
    build; no `task`: a source built before builds were task-aware, judged as a classifier), one phrase
    each. A gate without a threshold the task needs gets the recipe's default."""
    out = []
    for key, gate_key, kind in GATE_CHECKS[figures.get("task") or LEGACY_TASK]:
        value, threshold = _number(figures.get(key)), gate.get(gate_key, GATE_DEFAULTS[gate_key])
        if key == TOP1:
            if value is not None and -value > threshold + TOLERANCE:
                out.append(f"top-1 drop {-value:.4f} > {gate_key} {threshold}")
        elif value is None:
            out.append(f"no measured {key} ({figures.get(key)!r})")
        elif kind == "min" and value < threshold - TOLERANCE:
            out.append(f"{key} {value:.4f} < {gate_key} {threshold}")
        elif kind == "max" and value > threshold + TOLERANCE:
            out.append(f"{key} {value:.4f} > {gate_key} {threshold}")
    return out


def _number(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)


def read_release(stack: str) -> SourceRelease:
    """Read `stack`'s outputs from the backend now (the invoke pulumi.StackReference itself makes), so a
    bad source fails the program before anything is registered."""
    import pulumi

    try:
        result = pulumi.runtime.invoke(READ_STACK_OUTPUTS, {"name": stack})
    except Exception as exc:  # the engine's message: no such stack, no backend access
        raise ValueError(f"cannot read stack '{stack}': {str(exc).strip().splitlines()[-1]}") from None
    value = result.value or {}
    outputs = value.get("outputs") or {}
    if not outputs:
        raise ValueError(f"stack '{stack}' has no outputs; promote from a stack of this project that has completed "
                         "a `pulumi up`")
    return parse_release(stack, dict(outputs))
