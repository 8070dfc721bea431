"""A release: what a stack that built its model publishes in its outputs, and a promoting stack deploys.

A promoting stack (`modelstack:promote.from`) builds nothing: it deploys exactly the model digest and
image digest its source stack tested. Those outputs are read and checked here, at config time, before
any resource is registered; each problem is one line naming the source stack and the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from policy.rules import gate_table
from policy.rules.gate_table import DEFAULTS as GATE_DEFAULTS
from policy.rules.gate_table import LEGACY_TASK, TASKS

DIGEST = re.compile(r"^[0-9a-f]{64}$")
# REGISTRY/REPO[:TAG]@sha256:DIGEST, as the ServingImage component exports it.
PINNED_IMAGE = re.compile(r"^(?P<repository>[^@\s]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})$")
FIGURES = ("sizeRatio", "agreement", "accuracyDelta", "latencyP50Ms", "latencyP99Ms")
# The gate's other figures (policy/rules/gate_table.py), exported since builds judge fidelity by task, and the
# recipe metric's. A source built before has none of them: it was gated on agreement and top-1 drop, and is
# judged as a classifier (LEGACY_TASK) here too; one built before a figure existed lacks that figure.
TASK_FIGURES = (*(c.output for c in gate_table.CHECKS if c.output not in FIGURES), gate_table.METRICS_OUTPUT)
# accuracyDelta is null without labels (an embedding model never has them), and the engine drops a null
# output: a source lacking it is a build without labels, not an incomplete stack.
OPTIONAL_FIGURES = ("accuracyDelta", *TASK_FIGURES)
REQUIRED = ("modelName", "modelDigest", "modelArtifact", "image", "gate",
            *(key for key in FIGURES if key not in OPTIONAL_FIGURES))
# A gate output written before a threshold existed gets the recipe's default for it (GATE_DEFAULTS).
READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"  # the engine's builtin behind pulumi.StackReference


@dataclass(frozen=True)
class SourceRelease:
    stack: str  # ORG/PROJECT/STACK
    model_name: str
    model_digest: str
    artifact_uri: str
    image: str  # pinned by digest
    gate: dict[str, Any]  # the source's own gate: every threshold (GATE_DEFAULTS for those it lacks), metric_thresholds
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
    if task is not None and task not in TASKS:
        raise ValueError(f"stack '{stack}' output 'task' is not one of {', '.join(TASKS)}: {task!r}")
    task = task or LEGACY_TASK
    figures = {**{key: outputs.get(key) for key in (*FIGURES, *TASK_FIGURES)}, "task": task}
    failed = gate_failures(figures, gate)
    if failed:
        raise ValueError(f"stack '{stack}' model {digest[:12]} failed its gate ({task} model: {'; '.join(failed)}); "
                         "fix the source stack's build before promoting it")
    return SourceRelease(stack=stack, model_name=str(outputs["modelName"]), model_digest=digest,
                         artifact_uri=str(outputs["modelArtifact"]), image=image,
                         gate={**{k: float(gate.get(k, default)) for k, default in GATE_DEFAULTS.items()},
                               gate_table.METRIC_THRESHOLDS: gate.get(gate_table.METRIC_THRESHOLDS) or {}},
                         figures=figures)


def gate_failures(figures: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    """What of the figures misses the gate for the figures' `task` (policy/rules/gate_table.py, as the
    build judges it; no `task`: a source built before builds were task-aware, judged as a classifier), and
    the gate's recipe-metric thresholds, one phrase each. A gate without a threshold the task needs gets
    the recipe's default."""
    out = []
    for check in TASKS[figures.get("task") or LEGACY_TASK]:
        figure, threshold = _number(figures.get(check.output)), gate.get(check.gate, GATE_DEFAULTS[check.gate])
        if figure is None:
            if not check.optional:
                out.append(f"no measured {check.output} ({figures.get(check.output)!r})")
            continue
        value = check.value(figure)
        if not check.passes(value, threshold):
            relation = "<" if check.kind == "min" else ">"
            name = "top-1 drop" if check.negate else check.output
            out.append(f"{name} {value:.4f} {relation} {check.gate} {threshold}")
    out += [phrase for _, phrase in gate_table.metric_failures(figures.get(gate_table.METRICS_OUTPUT),
                                                               gate.get(gate_table.METRIC_THRESHOLDS))]  # fmt: skip
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
