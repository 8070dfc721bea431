"""A release: what a stack that built its model publishes in its outputs, and a promoting stack deploys.

A promoting stack (`modelstack:promote.from`) builds nothing: it deploys exactly the model digest and
image digest its source stack tested. Those outputs are read and checked here, at config time, before
any resource is registered; each problem is one line naming the source stack and the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DIGEST = re.compile(r"^[0-9a-f]{64}$")
# REGISTRY/REPO[:TAG]@sha256:DIGEST, as the ServingImage component exports it.
PINNED_IMAGE = re.compile(r"^(?P<repository>[^@\s]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})$")
FIGURES = ("sizeRatio", "agreement", "accuracyDelta", "latencyP50Ms", "latencyP99Ms")
REQUIRED = ("modelName", "modelDigest", "modelArtifact", "image", "gate", *FIGURES)
READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"  # the engine's builtin behind pulumi.StackReference


@dataclass(frozen=True)
class SourceRelease:
    stack: str  # ORG/PROJECT/STACK
    model_name: str
    model_digest: str
    artifact_uri: str
    image: str  # pinned by digest
    gate: dict[str, float]
    figures: dict[str, float | None]

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
    figures = {key: outputs[key] for key in FIGURES}
    failed = gate_failures(figures, gate)
    if failed:
        raise ValueError(f"stack '{stack}' model {digest[:12]} failed its gate ({'; '.join(failed)}); fix the "
                         "source stack's build before promoting it")
    return SourceRelease(stack=stack, model_name=str(outputs["modelName"]), model_digest=digest,
                         artifact_uri=str(outputs["modelArtifact"]), image=image,
                         gate={k: float(gate[k]) for k in ("min_agreement", "max_accuracy_drop")}, figures=figures)


def gate_failures(figures: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    """What of the figures misses the gate (as optimize/validate.py judges a build), one phrase each."""
    out = []
    agreement, delta = figures.get("agreement"), figures.get("accuracyDelta")
    if not isinstance(agreement, (int, float)):
        out.append(f"no measured agreement ({agreement!r})")
    elif agreement < gate["min_agreement"] - 1e-12:
        out.append(f"agreement {agreement:.4f} < min_agreement {gate['min_agreement']}")
    if isinstance(delta, (int, float)) and -delta > gate["max_accuracy_drop"] + 1e-12:
        out.append(f"top-1 drop {-delta:.4f} > max_accuracy_drop {gate['max_accuracy_drop']}")
    return out


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
