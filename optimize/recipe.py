"""Declarative optimization recipes: what the pipeline does to a model.

A recipe is a frozen pydantic model that validates on construction and
round-trips to YAML/JSON, in the spirit of Optimum's QuantizationConfig.
This module must stay light (no torch, no onnxruntime): the Pulumi program
imports it on every preview to validate stack config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from policy.rules.gate_table import DEFAULTS as GATE_DEFAULTS

QuantizeMode = Literal["none", "dynamic_int8", "static_int8", "fp16"]
GraphLevel = Literal["disabled", "basic", "extended", "all"]
# The CPU an int8 model is built for (optimize.hardware): "auto" detects the build machine's.
CpuTarget = Literal["auto", "avx2", "avx512", "avx512-vnni", "avx-vnni", "amx", "arm64"]
# What the model's output is, which decides how fidelity to the source is measured (optimize.fidelity).
Task = Literal["auto", "classification", "sequence", "ctc", "embedding", "regression", "closeness"]
# A recipe metric's figure names: identifiers, as they become keys of report.json and stack outputs.
FIGURE_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


class RecipeError(ValueError):
    """A recipe that cannot be used, with a message naming the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Structured pruning ranked across layers takes at most this share of any one layer: a layer left with no
# channel would cut the model in two.
MAX_GLOBAL_AMOUNT = 0.9


class PruneSpec(_Frozen):
    """Pruning. global_unstructured zeroes the smallest weights inside dense tensors (size after
    compression, no speed); structured removes whole channels and neurons (optimize.structured), so the
    exported graph is smaller and faster, and needs the model's code (a state_dict with its factory)."""

    method: Literal["none", "global_unstructured", "structured"] = "none"
    amount: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of weights (or channels) removed.")
    scope: Literal["layer", "global"] = Field(
        "layer", description="structured: the same fraction of every layer, or ranked across layers."
    )
    importance: Literal["magnitude", "taylor"] = Field(
        "magnitude",
        description="structured: how a channel is ranked: its weights' L2 norm, or the first-order (Taylor) "
        "estimate of the loss change on the calibration data, with the source's outputs as the target.",
    )

    @model_validator(mode="after")
    def _amount_matches_method(self) -> PruneSpec:
        if self.method == "none" and self.amount:
            raise ValueError("prune.amount is set but prune.method is 'none'; set a method or drop the amount")
        if self.method != "none" and not self.amount:
            raise ValueError(f"prune.method is '{self.method}' but prune.amount is 0; give a fraction in (0, 1)")
        if self.method != "structured" and (self.scope != "layer" or self.importance != "magnitude"):
            raise ValueError("prune.scope and prune.importance apply to method 'structured' only")
        if self.scope == "global" and self.amount > MAX_GLOBAL_AMOUNT:
            raise ValueError(f"prune.amount {self.amount} with scope global would empty whole layers (at most "
                             f"{MAX_GLOBAL_AMOUNT} of any one layer is removed); lower it or use scope layer")
        return self


class FinetuneSpec(_Frozen):
    """Training the compressed model (optimize.finetune) to match the source's outputs on the calibration
    and training data: no labels needed. Stops at `steps` or `time_budget_s`, whichever comes first."""

    steps: int = Field(1000, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW's learning rate (cosine decay to 0).")
    batch_size: int = Field(32, ge=1, le=65_536)
    temperature: float = Field(2.0, gt=0.0, le=100.0, description="Softens class scores for the KL loss.")
    time_budget_s: float = Field(600.0, gt=0.0, description="Training stops after this many seconds.")
    seed: int = Field(0, ge=0)


class DistillSpec(_Frozen):
    """Knowledge distillation into a smaller student (optimize.students), trained by `finetune` to match the
    source (the teacher), then exported, quantized and gated against the teacher. One of: `student`, the
    user's factory (module:callable returning an nn.Module with the teacher's inputs and outputs); `layers`,
    the teacher with this many of its repeated blocks kept, evenly spaced and initialised from the teacher's
    (DistilBERT-style); `width`, the fraction of each layer's channels kept (by magnitude)."""

    student: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
    layers: int | None = Field(None, ge=1)
    width: float | None = Field(None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_student(self) -> DistillSpec:
        given = [k for k in ("student", "layers", "width") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of student, layers, width (got {given or 'none'})")
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


class MetricThreshold(_Frozen):
    """A recipe metric's pass mark for one of its figures: a lower bound, an upper bound, or both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> MetricThreshold:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both (e.g. {min: 0.9})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class GateSpec(_Frozen):
    """The accuracy gate: a build that misses it fails and publishes nothing.

    Which thresholds apply depends on the task (optimize/fidelity.py; the table is
    policy/rules/gate_table.py): classification uses the argmax agreement (and the top-1 drop when
    labels are given); sequence the per-step agreement and the share of whole sequences unchanged; ctc
    the greedy-decoded sequences' character error rate against the source (and against sequence labels
    when given) and their exact-match share; embedding the cosine similarity; regression the relative
    error; closeness (an output whose task the data cannot show) the relative error and the worst row's
    cosine. "auto" infers the task from the data and the output. A model with several outputs is gated on
    each; `task` may then name one per output ({output_0: classification, output_1: regression}; outputs
    left out are inferred). `metric` adds the recipe's own figures, with their thresholds."""

    task: Task | dict[str, Task] = "auto"
    max_accuracy_drop: float = Field(GATE_DEFAULTS["max_accuracy_drop"], ge=0.0, le=1.0,
                                     description="Top-1 drop allowed, as a fraction.")  # fmt: skip
    min_agreement: float = Field(
        GATE_DEFAULTS["min_agreement"], ge=0.0, le=1.0,
        description="Argmax agreement with the source model (per step for a sequence).",
    )
    min_sequence_exact: float = Field(
        GATE_DEFAULTS["min_sequence_exact"], ge=0.0, le=1.0,
        description="sequence, ctc: the share of whole sequences the optimized model leaves unchanged "
        "(per-step argmax for sequence, the decoded text for ctc). Reported always; 0 gates nothing.",
    )  # fmt: skip
    min_cosine: float = Field(GATE_DEFAULTS["min_cosine"], ge=-1.0, le=1.0,
                              description="Embedding: mean cosine similarity to the source.")  # fmt: skip
    min_cosine_worst: float = Field(
        GATE_DEFAULTS["min_cosine_worst"], ge=-1.0, le=1.0,
        description="Embedding and closeness: the lowest cosine similarity of any one row.",
    )
    max_relative_error: float = Field(
        GATE_DEFAULTS["max_relative_error"], ge=0.0,
        description="Regression and closeness: ||optimized - source|| / ||source|| over the validation set.",
    )
    max_cer: float = Field(
        GATE_DEFAULTS["max_cer"], ge=0.0,
        description="ctc: character error rate of the optimized model's decoded sequences against the "
        "source's (edit distance / source length, over the set).",
    )
    max_cer_increase: float = Field(
        GATE_DEFAULTS["max_cer_increase"], ge=0.0,
        description="ctc with sequence labels: how much the character error rate against the labels may rise.",
    )
    ctc_blank: int = Field(0, ge=0, description="ctc: the blank's index along the class axis (last axis).")
    metric: str | None = Field(
        None, pattern=r"^[\w.]+:[\w.]+$",
        description="module:function of the recipe's own metric: called as function(source, candidate, labels) "
        "with each model's outputs by name, returning {figure: number}; judged by metric_thresholds.",
    )
    metric_thresholds: dict[str, MetricThreshold] = Field(
        default_factory=dict, description="Per figure the metric returns: {min: x} and/or {max: x}."
    )

    @model_validator(mode="after")
    def _metric_has_thresholds(self) -> GateSpec:
        if self.metric_thresholds and self.metric is None:
            raise ValueError("metric_thresholds is set but metric is not; name the function (module:function)")
        bad = [name for name in self.metric_thresholds if not re.match(FIGURE_NAME, name)]
        if bad:
            raise ValueError(f"metric_thresholds names {bad} are not figure names (lowercase letters, digits, _)")
        return self


class BenchmarkSpec(_Frozen):
    """Latency benchmark: each engine in its own process, same threads."""

    threads: int = Field(2, ge=1, le=256)
    batch_sizes: tuple[int, ...] = Field((1, 8), min_length=1)
    warmup: int = Field(10, ge=0)
    iterations: int = Field(100, ge=1)


class SearchSpec(_Frozen):
    """The `auto` search (optimize.search): variants of this recipe, each built and gated; the fastest that
    passes wins. Bounded: a fixed list in a fixed order, cut off by the time budget. A recipe that also sets
    `finetune` grants a training budget: structured-pruned and distilled candidates join the list."""

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
    finetune: FinetuneSpec | None = Field(None, description="Train the pruned or distilled model on the source's "
                                          "outputs (needed by distill; its defaults apply when left out).")
    distill: DistillSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _distill_trains(cls, data: Any) -> Any:
        """A student is trained: distill without finetune takes finetune's defaults."""
        if isinstance(data, dict) and data.get("distill") is not None and data.get("finetune") is None:
            return {**data, "finetune": {}}
        return data

    @model_validator(mode="after")
    def _something_to_train(self) -> Recipe:
        if self.finetune is not None and self.distill is None and self.prune.method == "none" and not self.search:
            raise ValueError("finetune is set but neither prune nor distill changes the model, so there is "
                             "nothing to train; add prune or distill (or search: auto then tries them), or drop "
                             "finetune")
        if self.distill is not None and self.distill.width is not None and self.prune.method == "structured":
            raise ValueError("distill.width and prune.method structured both remove channels; give one")
        return self

    @property
    def trains(self) -> bool:
        return self.finetune is not None

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
