"""Declarative optimization recipes: what the pipeline does to a model.

A recipe is a frozen pydantic model that validates on construction and
round-trips to YAML/JSON, in the spirit of Optimum's QuantizationConfig.
This module must stay light (no torch, no onnxruntime): the Pulumi program
imports it on every preview to validate stack config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

QuantizeMode = Literal["none", "dynamic_int8", "static_int8", "fp16"]
GraphLevel = Literal["disabled", "basic", "extended", "all"]
# The CPU an int8 model is built for (optimize.hardware): "auto" detects the build machine's.
CpuTarget = Literal["auto", "avx2", "avx512", "avx512-vnni", "avx-vnni", "amx", "arm64"]
# What the model's output is, which decides how fidelity to the source is measured (optimize.fidelity).
Task = Literal["auto", "classification", "sequence", "embedding", "regression"]


class RecipeError(ValueError):
    """A recipe that cannot be used, with a message naming the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PruneSpec(_Frozen):
    """Pruning with torch.nn.utils.prune, made permanent before export."""

    method: Literal["none", "global_unstructured", "structured"] = "none"
    amount: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of weights (or rows/channels) removed.")

    @model_validator(mode="after")
    def _amount_matches_method(self) -> PruneSpec:
        if self.method == "none" and self.amount:
            raise ValueError("prune.amount is set but prune.method is 'none'; set a method or drop the amount")
        if self.method != "none" and not self.amount:
            raise ValueError(f"prune.method is '{self.method}' but prune.amount is 0; give a fraction in (0, 1)")
        return self


class ExportSpec(_Frozen):
    """torch -> ONNX export."""

    opset: int = Field(18, ge=13, le=23)
    dynamic_batch: bool = True
    input_shapes: dict[str, tuple[int, ...]] | None = Field(
        None,
        description="Per-input shape without the batch dimension. Only needed when no data is given; "
        "when data is given it must agree.",
    )
    dynamic_sequence: bool | Literal["auto"] = Field(
        "auto",
        description="Export axis 1 of the inputs that carry a sequence as a dynamic dimension. auto: where "
        "the data shows one (a padding mask, or validation and calibration of different lengths), "
        "falling back to the data's length, with the reason in the report, if the export cannot take "
        "other lengths; true: the same, but such a failure fails the build; false: the data's length.",
    )


class GraphSpec(_Frozen):
    """ONNX Runtime offline graph optimization saved into the artifact."""

    optimization_level: GraphLevel = "extended"
    transformer_fusions: bool = Field(
        True,
        description="Fuse attention and Gelu into ONNX Runtime's contrib ops (onnxscript's ORT fusions) "
        "on torch exports; int8 quantization then emits QAttention. No effect on graphs without those "
        "patterns.",
    )


class QuantizeSpec(_Frozen):
    """Quantization with onnxruntime.quantization (or fp16 conversion)."""

    mode: QuantizeMode = "dynamic_int8"
    per_channel: bool = True
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1, le=100_000)
    op_types: tuple[str, ...] = Field(
        ("Conv", "MatMul", "Gemm", "Attention", "Gather", "LSTM"),
        min_length=1,
        description="ONNX op types to quantize: the weight-bearing ones, where int8 pays off. Gather is an "
        "embedding table (only a Gather of weights is quantized), LSTM runs as DynamicQuantizeLSTM.",
    )
    reduce_range: bool | Literal["auto"] = Field(
        "auto",
        description="7-bit weights. 'auto': on when the target CPU lacks VNNI, where ONNX Runtime's u8s8 "
        "int8 GEMMs can saturate; off with VNNI (it costs accuracy there for nothing).",
    )
    exclude_nodes: tuple[str, ...] = Field((), description="ONNX node names kept in float (the sensitive ones).")
    target_cpu: CpuTarget = Field(
        "auto", description="The CPU the model will serve on; 'auto' detects the build machine's features."
    )


class GateSpec(_Frozen):
    """The accuracy gate: a build that misses it fails and publishes nothing.

    Which thresholds apply depends on the task (optimize.fidelity): classification and sequence use
    the argmax agreement (and the top-1 drop when labels are given), embedding the cosine similarity,
    regression the relative error. "auto" infers the task from the data and the output. A model with
    several outputs is gated on each; `task` may then name one per output ({output_0: classification,
    output_1: regression}; outputs left out are inferred)."""

    task: Task | dict[str, Task] = "auto"
    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0, description="Top-1 drop allowed, as a fraction.")
    min_agreement: float = Field(0.99, ge=0.0, le=1.0, description="Argmax agreement with the source model.")
    min_cosine: float = Field(0.99, ge=-1.0, le=1.0, description="Embedding: mean cosine similarity to the source.")
    min_cosine_worst: float = Field(
        0.95, ge=-1.0, le=1.0, description="Embedding: the lowest cosine similarity of any one row."
    )
    max_relative_error: float = Field(
        0.05, ge=0.0, description="Regression: ||optimized - source|| / ||source|| over the validation set."
    )


class BenchmarkSpec(_Frozen):
    """Latency benchmark: each engine in its own process, same threads."""

    threads: int = Field(2, ge=1, le=256)
    batch_sizes: tuple[int, ...] = Field((1, 8), min_length=1)
    warmup: int = Field(10, ge=0)
    iterations: int = Field(100, ge=1)


class SearchSpec(_Frozen):
    """The `auto` search (optimize.search): variants of this recipe, each built and gated; the fastest that
    passes wins. Bounded: a fixed list in a fixed order, cut off by the time budget."""

    time_budget_s: float = Field(900.0, gt=0, description="No new candidate starts after this many seconds.")
    iterations: int = Field(50, ge=5, le=10_000, description="Batch-1 latency iterations per candidate.")
    exclude_nodes: int = Field(
        3, ge=0, le=50, description="When no int8 candidate passes: keep this many most sensitive nodes in fp32."
    )


class Recipe(_Frozen):
    """A whole optimization recipe."""

    name: str = Field("custom", min_length=1, max_length=63)
    prune: PruneSpec = PruneSpec()
    export: ExportSpec = ExportSpec()
    graph: GraphSpec = GraphSpec()
    quantize: QuantizeSpec = QuantizeSpec()
    gate: GateSpec = GateSpec()
    benchmark: BenchmarkSpec = BenchmarkSpec()
    search: SearchSpec | None = Field(None, description="Search variants of this recipe (the `auto` preset).")

    @property
    def needs_calibration(self) -> bool:
        """Static int8 needs a calibration set."""
        return self.quantize.mode == "static_int8"

    @property
    def needs_gpu(self) -> bool:
        """fp16 kernels only pay off (and are only complete) on CUDA."""
        return self.quantize.mode == "fp16"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RecipeError(f"{source}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """One line per problem: 'field.path: message (got value)'."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "recipe"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{where}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)


PRESETS: dict[str, Recipe] = {
    "auto": Recipe(name="auto", search=SearchSpec()),
    "int8-dynamic": Recipe(name="int8-dynamic", quantize=QuantizeSpec(mode="dynamic_int8")),
    "int8-static": Recipe(name="int8-static", quantize=QuantizeSpec(mode="static_int8")),
    "fp16": Recipe(name="fp16", quantize=QuantizeSpec(mode="fp16")),
    "fp32": Recipe(
        name="fp32", quantize=QuantizeSpec(mode="none"), gate=GateSpec(max_accuracy_drop=0.0, min_agreement=0.999)
    ),
    "prune50-int8": Recipe(
        name="prune50-int8",
        prune=PruneSpec(method="global_unstructured", amount=0.5),
        quantize=QuantizeSpec(mode="dynamic_int8"),
    ),
}


def load_recipe(spec: str, base_dir: Path | None = None) -> Recipe:
    """A preset name, or a path to a YAML/JSON recipe file (relative to base_dir)."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.suffix.lower() not in {".yaml", ".yml", ".json"}:
        raise RecipeError(
            f"recipe '{spec}' is neither a preset ({', '.join(sorted(PRESETS))}) nor a .yaml/.yml/.json file"
        )
    if not path.is_file():
        raise RecipeError(f"recipe file '{spec}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML, so one loader reads both
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe file '{spec}' is not valid YAML/JSON: {exc}") from None
    return Recipe.from_dict(data, source=str(spec))
