"""The whole build: load -> prune -> export -> quantize -> graph-optimize ->
validate (+ gate) -> benchmark -> report, published atomically.

Everything is written into a temporary sibling of the output directory and
renamed into place at the end, so DIR is either complete or absent; on any
error (bad input, failed gate) nothing is published.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from optimize import data as datasets
from optimize import report as reporting
from optimize import sources
from optimize.atomic import staged_dir
from optimize.errors import OptimizeError
from optimize.recipe import ExportSpec, Recipe, RecipeError
from optimize.sources import _first

Progress = Callable[[str], None]
BASELINE_ENGINES = {
    "exported_program": "torch (ExportedProgram.module(), CPU)",
    "torchscript": "torch (TorchScript, CPU)",
    "state_dict": "torch eager (CPU)",
    "onnx": "onnxruntime CPU (source .onnx)",
}
STAGES = ("load", "distill", "prune", "finetune", "export", "quantize", "graph", "validate", "benchmark", "report")


def build(
    model: Path,
    recipe: Recipe,
    out: Path,
    validation: Path | None = None,
    calibration: Path | None = None,
    factory: str | None = None,
    progress: Progress | None = None,
    name: str | None = None,
    training: Path | None = None,
) -> dict[str, Any]:
    """Build DIR/model.onnx + DIR/report.json (+ summary.md, chart.png); returns the report."""
    model, out = Path(model), Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise OptimizeError(f"output '{out}' exists and is not a directory")
    if recipe.needs_calibration and calibration is None:
        raise OptimizeError("quantize.mode static_int8 needs a calibration set (--calibration DATA)")
    stage = ["load"]

    def track(name: str) -> None:
        stage[0] = name
        if progress is not None:
            progress(name)

    with staged_dir(out) as staging, tempfile.TemporaryDirectory(prefix="optimize-") as work:
        try:
            return _build(model, recipe, staging, Path(work), _Data(validation, calibration, training), factory,
                          track, name)  # fmt: skip
        except (OptimizeError, RecipeError):
            raise
        except Exception as exc:  # a library's failure: one line naming the stage, and --out stays absent
            raise OptimizeError(f"{stage[0]} stage failed: {_library_error(exc)}") from None


def _build(
    model: Path,
    recipe: Recipe,
    dest: Path,
    work: Path,
    files: _Data,
    factory: str | None,
    progress: Progress | None,
    name: str | None,
) -> dict[str, Any]:
    say = progress or (lambda stage: None)
    threads = recipe.benchmark.threads

    say("load")
    src = sources.load(model, factory)
    if not src.is_torch and (recipe.prune.method != "none" or recipe.distill is not None):
        raise OptimizeError("prune and distill need a torch source; an .onnx source runs only the "
                            "graph/quantize/validate stages")  # fmt: skip
    from optimize import compress

    compress.needs(recipe, src)
    val, cal, trn = (datasets.load(path, src.input_names, role, src.optional_inputs) if path else None
                     for path, role in files.roles())  # fmt: skip
    if trn is not None and not recipe.trains:
        raise OptimizeError("training data is given but the recipe trains nothing; add finetune (with prune) "
                            "or distill to the recipe, or leave the training data out")  # fmt: skip
    src.input_names = _bound_inputs(src, val, cal, trn)
    example = _example_inputs(recipe, src, val or cal)
    baseline_run = _baseline_runner(src)
    probe = _probe(baseline_run, example, src)
    from optimize.validate import batch_axes

    out_batch_axes = batch_axes(baseline_run, example)
    out_names = None
    if src.is_torch:
        from optimize.runtime import torch_output_names

        out_names = torch_output_names(src.runner(), list(example.values()))
    source_out = None
    tasks = None
    if val is not None:
        from optimize.validate import check_labels, predict

        check_labels(probe, val)
        source_out = predict(baseline_run, val, out_batch_axes)
        tasks = _check_gate(recipe, src, out_names, source_out, val)
    if trn is not None:
        _probe(baseline_run, trn.take(2), src, f"training data '{trn.path}'")

    given, compression, working = None, None, src
    if recipe.trains or recipe.prune.method != "none":
        given = compress.Inputs(model, factory, src, example, baseline_run, out_batch_axes,
                                [d for d in (cal, trn) if d is not None], threads)  # fmt: skip
        given.targets(recipe, tasks, source_out, _output_names(src, out_names, len(out_batch_axes)))
        working, compression = compress.run(recipe, given, say)

    ctx = _Context(src=src, working=working, example=example, baseline_run=baseline_run,
                   out_batch_axes=out_batch_axes, out_names=out_names, export=recipe.export, val=val, cal=cal,
                   work=work, threads=threads, say=say, sequence=_sequence_axes(recipe, src, val, cal),
                   source_out=source_out, compress_inputs=given)  # fmt: skip
    search_result = None
    if recipe.search is not None:
        from optimize import search

        chosen, search_result = search.run(recipe, ctx)
    else:
        chosen = ctx.variant(recipe, work / "build")
    if val is not None:
        from optimize import fidelity

        fidelity.enforce(chosen.fidelity, chosen.accuracy)
        gate_result = {"checked": True, "passed": True, **recipe.gate.model_dump()}
    else:
        gate_result = {"checked": False, "reason": "no validation data: accuracy gate not enforced"}
    recipe = chosen.recipe
    compression = chosen.compression or compression
    pruning = compress.pruning_section(recipe, compression)
    final = dest / "model.onnx"
    # Re-save through onnx: one self-contained file with a canonical serialization.
    import onnx

    onnx.save_model(onnx.load(str(chosen.path), load_external_data=True), str(final))
    accuracy, fidelity_result, int8_plan = chosen.accuracy, chosen.fidelity, chosen.int8_plan
    fp32 = ctx.fp32(recipe.graph.transformer_fusions)

    say("benchmark")
    from optimize.benchmark import run_engine

    bench = recipe.benchmark
    feed = (val or cal or datasets.Dataset(example, None)).take(max(bench.batch_sizes))
    inputs = work / "bench_inputs.npz"
    np.savez(inputs, *[feed[n] for n in src.input_names])  # arr_0, arr_1, ...: keeps the input order
    args = (threads, tuple(bench.batch_sizes), bench.warmup, bench.iterations)
    latency = {
        "baseline": run_engine("torch" if src.is_torch else "onnx", src.path, inputs, *args, factory=factory),
        "optimized": run_engine("onnx", final, inputs, *args),
    }

    say("report")
    source_size = model.stat().st_size
    opt_size = final.stat().st_size
    sig = reporting.signature(final)
    self_rss = reporting.peak_rss_bytes()
    report: dict[str, Any] = {
        "name": reporting.dns_label(name or model.stem),
        "digest": reporting.sha256(final),
        "source_digest": reporting.sha256(model),
        "source_format": src.format,
        "recipe": recipe.to_dict(),
        "size_bytes": {"source": source_size, "optimized": opt_size},
        "size_ratio": round(opt_size / source_size, 4),
        "accuracy": accuracy,
        "fidelity": fidelity_result,
        "int8": int8_plan.to_dict() if int8_plan else None,
        "search": search_result,
        "gate": gate_result,
        "latency_ms": latency,
        "latency_ratio_p50": {
            k: round(latency["optimized"][k]["p50"] / latency["baseline"][k]["p50"], 4) for k in latency["baseline"]
        },
        "baseline_engine": BASELINE_ENGINES[src.format],
        "sparsity": pruning["sparsity"] if pruning and "sparsity" in pruning else _source_sparsity(working, fp32),
        "pruning": pruning,
        "compression": compression,
        "contrib_ops": reporting.contrib_ops(final),
        "inputs": sig["inputs"],
        "sequence": ctx.sequences[recipe.graph.transformer_fusions].to_dict() if ctx.sequence else None,
        "outputs": sig["outputs"],
        # This process only: a forked worker's maxrss includes the parent's pages at fork time.
        "peak_rss_bytes": self_rss,
        "versions": reporting.versions(),
    }
    (dest / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (dest / "summary.md").write_text(reporting.summary_markdown(report))
    reporting.chart(report, dest / "chart.png")
    return report


@dataclass(frozen=True)
class _Data:
    """The data files of a build: held-out validation, calibration (static int8; training rows too), and
    training rows for fine-tuning."""

    validation: Path | None
    calibration: Path | None
    training: Path | None

    def roles(self) -> list[tuple[Path | None, str]]:
        return [(self.validation, "validation"), (self.calibration, "calibration"), (self.training, "training")]


@dataclass
class Variant:
    """One recipe's model, built and measured against the source (not yet gated)."""

    recipe: Recipe
    path: Path
    accuracy: dict[str, Any]
    fidelity: dict[str, Any]
    int8_plan: Any  # optimize.hardware.Int8Plan | None
    quantized_path: Path | None  # before graph optimization (node names as the quantizer left them)
    compression: dict[str, Any] | None = None  # a candidate that was pruned or distilled here (optimize.search)


@dataclass
class _Context:
    """What every recipe variant of one build shares: the loaded source, its data and its outputs, and the
    fp32 export (one per transformer_fusions setting: the only export input a variant may change)."""

    src: sources.Source
    working: sources.Source  # the pruned copy, or src
    example: dict[str, np.ndarray]
    baseline_run: Any
    out_batch_axes: list[int]  # per output
    out_names: list[str] | None  # a torch source's dict keys, for several outputs
    export: ExportSpec
    val: datasets.Dataset | None
    cal: datasets.Dataset | None
    work: Path
    threads: int
    say: Callable[[str], None]
    sequence: Any = None  # optimize.sequence.SequenceAxes: what the data shows
    sequences: dict[bool, Any] = field(default_factory=dict)  # and what each export took, by `fuse`
    exports: dict[bool, Path] = field(default_factory=dict)
    source_out: list[np.ndarray] | None = None
    compress_inputs: Any = None  # optimize.compress.Inputs, where the recipe may train

    @property
    def checked(self) -> datasets.Dataset:
        return self.val or datasets.Dataset(self.example, None)

    def fp32(self, fuse: bool) -> Path:
        if fuse not in self.exports:
            self.say("export")
            path = self.work / f"fp32{'-fused' if fuse else ''}.onnx"
            import onnx

            if self.src.is_torch:
                self._export(fuse, path)
            else:
                onnx.save_model(self.src.model, str(path))
            self.exports[fuse] = path
        return self.exports[fuse]

    def _export(self, fuse: bool, path: Path) -> None:
        """Export the working copy to `path`: with a dynamic sequence length where the data shows one and
        the export keeps to the source at another length (optimize.sequence), else at the data's."""
        import onnx
        import torch

        from optimize import sequence
        from optimize.export import export
        from optimize.runtime import ort_runner, ort_session, torch_runner

        def save(axes: tuple[str, ...]) -> None:
            torch.manual_seed(0)
            proto = export(self.working, self.example, self.export, self.work / path.stem, fuse=fuse, sequence=axes,
                           output_batch_axes=self.out_batch_axes, output_names=self.out_names)  # fmt: skip
            onnx.save_model(proto, str(path))

        seq = self.sequence
        if seq is not None:
            try:
                save(seq.inputs)
                exported = ort_runner(ort_session(path, self.threads), self.src.input_names, all_outputs=True)
                source = torch_runner(self.working.runner(), all_outputs=True)
                sequence.verify(source, exported, self.checked.take(sequence.CHECK_ROWS), seq)
                self.sequences[fuse] = replace(seq, dynamic=True)
                return
            except OptimizeError as exc:
                if self.export.dynamic_sequence is True:
                    raise OptimizeError(f"export.dynamic_sequence is true, but {exc}") from None
                self.sequences[fuse] = seq.refused(str(exc))
        save(())

    def variant(self, recipe: Recipe, where: Path) -> Variant:
        """quantize -> graph-optimize -> validate one recipe into `where`."""
        from optimize import fidelity
        from optimize.graph import optimize
        from optimize.runtime import ort_runner, ort_session
        from optimize.validate import predict

        fp32 = self.fp32(recipe.graph.transformer_fusions)
        where.mkdir(parents=True, exist_ok=True)
        current, int8_plan = fp32, None
        if recipe.quantize.mode != "none":
            self.say("quantize")
            from optimize.quantize import quantize

            spec = recipe.quantize
            if spec.mode in ("dynamic_int8", "static_int8"):
                from optimize.hardware import plan_int8

                int8_plan = plan_int8(spec)  # the target CPU decides reduce_range; the report says why
                spec = spec.model_copy(update={"reduce_range": int8_plan.reduce_range})
            current = where / "quantized.onnx"
            quantize(fp32, current, spec, self.cal)
        self.say("graph")
        optimized = where / "optimized.onnx"
        optimize(current, optimized, recipe.graph.optimization_level)
        self.say("validate")
        if self.source_out is None:
            self.source_out = predict(self.baseline_run, self.checked, self.out_batch_axes)
        session = ort_session(optimized, self.threads)
        opt_out = predict(ort_runner(session, self.src.input_names, all_outputs=True), self.checked,
                          self.out_batch_axes)  # fmt: skip
        names = [o.name for o in session.get_outputs()]
        if len(names) != len(self.source_out):
            raise OptimizeError(f"the ONNX model has {len(names)} outputs but the source has "
                                f"{len(self.source_out)}")  # fmt: skip
        accuracy, result = fidelity.judge(self.source_out, opt_out, names, self.checked.labels, recipe.gate)
        return Variant(recipe, optimized, accuracy, result, int8_plan, current if current != fp32 else None)

    def latency(self, path: Path, iterations: int) -> float:
        """Batch-1 p50 (ms) of an ONNX model, in its own process as the benchmark stage measures."""
        from optimize.benchmark import run_engine

        inputs = self.work / "search_inputs.npz"
        if not inputs.exists():
            one = self.checked.take(1)
            np.savez(inputs, *[one[n] for n in self.src.input_names])
        return float(run_engine("onnx", path, inputs, self.threads, (1,), 5, iterations)["b1"]["p50"])


def _example_inputs(recipe: Recipe, src: sources.Source, data: datasets.Dataset | None) -> dict[str, np.ndarray]:
    """Two rows for export (batch 2 so the exporter does not specialize batch=1)."""
    declared = recipe.export.input_shapes
    if data is not None:
        if declared:
            for n, arr in data.inputs.items():
                want = tuple(declared.get(n, ()))
                if n in declared and tuple(arr.shape[1:]) != want:
                    raise OptimizeError(
                        f"shape mismatch: recipe export.input_shapes['{n}'] is {list(want)} "
                        f"but the data holds {list(arr.shape[1:])} (batch dimension excluded)"
                    )
        return data.take(2)
    if declared:
        src.input_names = datasets.bound_names(src.input_names, set(declared), src.optional_inputs)
        missing = [n for n in src.input_names if n not in declared]
        if missing:
            raise OptimizeError(f"export.input_shapes has no shape for model inputs {missing}")
        rng = np.random.default_rng(0)
        return {n: rng.standard_normal((2, *declared[n])).astype(np.float32) for n in src.input_names}
    raise OptimizeError(
        "no example inputs: give --validation or --calibration data, or export.input_shapes in the recipe"
    )


def _sequence_axes(recipe: Recipe, src: sources.Source, val: datasets.Dataset | None,
                   cal: datasets.Dataset | None) -> Any:  # fmt: skip
    """The sequence axes the data shows (optimize.sequence), for a torch source with dynamic_sequence on."""
    from optimize import sequence

    wanted = recipe.export.dynamic_sequence
    data = val or cal
    if wanted is False or not src.is_torch or data is None:
        return None
    found = sequence.find(data.inputs, cal.inputs if val is not None and cal is not None else None)
    if found is None and wanted is True:
        raise OptimizeError("export.dynamic_sequence is true, but the data shows no sequence axis: no input is a "
                            "padding mask and validation and calibration have the same lengths")  # fmt: skip
    return found


def _check_gate(recipe: Recipe, src: sources.Source, out_names: list[str] | None, source_out: list[np.ndarray],
                val: datasets.Dataset) -> list[str]:  # fmt: skip
    """Before any build work: each output's task fits the labels and the recipe (optimize.fidelity), and
    the recipe's metric imports, runs on the source's outputs and returns the figures its thresholds name.
    Returns each output's task."""
    from optimize import fidelity

    names = _output_names(src, out_names, len(source_out))
    plan = fidelity.plan_tasks(source_out, names, val.labels, recipe.gate)
    if recipe.gate.metric:
        outputs = dict(zip(names, source_out, strict=True))
        fidelity.metric_figures(recipe.gate, outputs, outputs, val.labels)
    return [task for task, _ in plan]


def _output_names(src: sources.Source, given: list[str] | None, count: int) -> list[str]:
    """The names the ONNX model's outputs will have (the graph's own for an ONNX source)."""
    if not src.is_torch:
        return [o.name for o in src.model.graph.output]
    from optimize.export import exported_output_names

    return exported_output_names(count, given)


def _bound_inputs(src: sources.Source, *sets: datasets.Dataset | None) -> list[str]:
    """The inputs the data gives (a model's optional trailing arguments may be left out), the same for
    validation and calibration."""
    given = {tuple(d.inputs) for d in sets if d is not None}
    if len(given) > 1:
        a, b = sorted(given)
        raise OptimizeError(f"the validation and calibration data give different model inputs ({list(a)} and "
                            f"{list(b)}); give both the same arrays")  # fmt: skip
    return list(given.pop()) if given else src.input_names


def _baseline_runner(src: sources.Source) -> Any:
    from optimize.runtime import ort_runner, ort_session, torch_runner

    if src.is_torch:
        return torch_runner(src.runner(), all_outputs=True)
    return ort_runner(ort_session(src.path, 1), src.input_names, all_outputs=True)


# ONNX Runtime's messages open with a status code and, for some, the C++ function that raised.
ORT_STATUS = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
CPP_LOCATION = re.compile(r"\S+\.(?:cc|cpp|h):\d+ [^(]*\([^)]*\)\s*")


def _library_error(exc: BaseException) -> str:
    """One line for an unexpected failure: ORT's message without its status code and C++ location (it
    names the node or op), anything else as `Type: first line`."""
    line = _first(exc)
    if ORT_STATUS.match(line):
        return CPP_LOCATION.sub("", ORT_STATUS.sub("", line)).replace("failed:", "failed: ", 1)
    return f"{type(exc).__name__}: {line}"


def _probe(run: Any, example: dict[str, np.ndarray], src: sources.Source, what: str = "input") -> np.ndarray:
    """Run the source model once on the example rows (its first output): a wrong input shape fails here."""
    try:
        return np.asarray(run(*example.values())[0])
    except Exception as exc:
        shapes = ", ".join(f"'{k}' {list(v.shape)} {v.dtype}" for k, v in example.items())
        raise OptimizeError(f"shape mismatch: the model rejects {what} {shapes}: {_first(exc)}") from None


def _source_sparsity(src: sources.Source, fp32: Path) -> float:
    if src.is_torch:
        from optimize.prune import sparsity

        return sparsity(src)["sparsity"]
    return _onnx_sparsity(fp32)


def _onnx_sparsity(path: Path) -> float:
    """Zero fraction over float weight initializers (for sources that were not pruned here)."""
    import onnx
    from onnx import numpy_helper

    zeros = total = 0
    for init in onnx.load(str(path)).graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) >= 2:
            arr = numpy_helper.to_array(init)
            zeros += int((arr == 0).sum())
            total += arr.size
    return round(zeros / total, 6) if total else 0.0
