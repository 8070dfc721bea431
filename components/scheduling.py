"""Where serving pods may run: what GpuNodePool hands ModelService.

Kept apart from both components so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
# The taint and label every GPU node of ours carries (EKS node group or Karpenter NodePool).
GPU_TAINT_KEY = GPU_RESOURCE
GPU_NODE_LABEL = "modelstack.dev/accelerator"
GPU_NODE_LABEL_VALUE = "nvidia"


@dataclass(frozen=True)
class Scheduling:
    """Pod-spec fields that place serving pods; empty for CPU stacks."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    gpu_resource: str = GPU_RESOURCE
    runtime_class_name: str | None = None

    @classmethod
    def gpu(cls, runtime_class_name: str | None = None) -> Scheduling:
        return cls(
            node_selector={GPU_NODE_LABEL: GPU_NODE_LABEL_VALUE},
            tolerations=(gpu_toleration(),),
            runtime_class_name=runtime_class_name,
        )


def gpu_toleration() -> dict[str, Any]:
    """Tolerates the NoSchedule taint on GPU nodes (whatever its value)."""
    return {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
