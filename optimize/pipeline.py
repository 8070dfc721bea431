"""The whole build: load -> prune -> export -> quantize -> graph-optimize ->
validate (+ gate) -> benchmark -> report, published atomically.

Everything is written into a temporary sibling of the output directory and
renamed into place at the end, so DIR is either complete or absent; on any
error (bad input, failed gate) nothing is published.
"""

from __future__ import annotations

import json
import re
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from optimize import data as datasets
from optimize import report as reporting
from optimize import sources
from optimize.atomic import staged_dir
from optimize.errors import OptimizeError
from optimize.recipe import Recipe, RecipeError
from optimize.sources import _first

Progress = Callable[[str], None]
BASELINE_ENGINES = {
    "exported_program": "torch (ExportedProgram.module(), CPU)",
    "torchscript": "torch (TorchScript, CPU)",
    "state_dict": "torch eager (CPU)",
    "onnx": "onnxruntime CPU (source .onnx)",
}
STAGES = ("load", "prune", "export", "quantize", "graph", "validate", "benchmark", "report")


def build(
    model: Path,
    recipe: Recipe,
    out: Path,
    validation: Path | None = None,
    calibration: Path | None = None,
    factory: str | None = None,
    progress: Progress | None = None,
    name: str | None = None,
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
            return _build(model, recipe, staging, Path(work), validation, calibration, factory, track, name)
        except (OptimizeError, RecipeError):
            raise
        except Exception as exc:  # a library's failure: one line naming the stage, and --out stays absent
            raise OptimizeError(f"{stage[0]} stage failed: {_library_error(exc)}") from None


def _build(
    model: Path,
    recipe: Recipe,
    dest: Path,
    work: Path,
    validation: Path | None,
    calibration: Path | None,
    factory: str | None,
    progress: Progress | None,
    name: str | None,
) -> dict[str, Any]:
    say = progress or (lambda stage: None)
    threads = recipe.benchmark.threads

    say("load")
    src = sources.load(model, factory)
    if not src.is_torch and recipe.prune.method != "none":
        raise OptimizeError("prune needs a torch source; an .onnx source runs only the graph/quantize/validate stages")
    val = datasets.load(validation, src.input_names, "validation") if validation else None
    cal = datasets.load(calibration, src.input_names, "calibration") if calibration else None
    example = _example_inputs(recipe, src, val or cal)
    baseline_run = _baseline_runner(src)
    probe = _probe(baseline_run, example, src)
    from optimize.validate import batch_axis

    out_batch_axis = batch_axis(baseline_run, example)
    if val is not None:
        from optimize.validate import check_labels

        check_labels(probe, val)

    pruning = None
    working = src
    if recipe.prune.method != "none":
        say("prune")
        from optimize import prune

        working = sources.load(model, factory)  # a second copy: the original stays the baseline
        stats = prune.apply(working, recipe.prune)
        one = {k: v[:1] for k, v in example.items()}
        stats["latency"] = prune.compare_latency(src.runner(), working.runner(), one, threads)
        pruning = stats

    say("export")
    fp32 = work / "fp32.onnx"
    if src.is_torch:
        import onnx
        import torch

        from optimize.export import export

        torch.manual_seed(0)
        model_proto = export(working, example, recipe.export, work, fuse=recipe.graph.transformer_fusions,
                             output_batch_axis=out_batch_axis)
        onnx.save_model(model_proto, str(fp32))
    else:
        import onnx

        onnx.save_model(src.model, str(fp32))

    current = fp32
    if recipe.quantize.mode != "none":
        say("quantize")
        from optimize.quantize import quantize

        current = work / "quantized.onnx"
        quantize(fp32, current, recipe.quantize, cal)

    say("graph")
    from optimize.graph import optimize

    optimized = work / "optimized.onnx"
    optimize(current, optimized, recipe.graph.optimization_level)
    final = dest / "model.onnx"
    # Re-save through onnx: one self-contained file with a canonical serialization.
    onnx.save_model(onnx.load(str(optimized), load_external_data=True), str(final))

    say("validate")
    from optimize.runtime import ort_runner, ort_session
    from optimize.validate import compare, gate, predict

    opt_run = ort_runner(ort_session(final, threads), src.input_names)
    if val is not None:
        accuracy = compare(predict(baseline_run, val, out_batch_axis), predict(opt_run, val, out_batch_axis),
                           val.labels)
        gate(accuracy, recipe.gate)
        gate_result = {"checked": True, "passed": True, **recipe.gate.model_dump()}
    else:
        ex = datasets.Dataset(example, None)
        accuracy = compare(predict(baseline_run, ex, out_batch_axis), predict(opt_run, ex, out_batch_axis), None)
        gate_result = {"checked": False, "reason": "no validation data: accuracy gate not enforced"}

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
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report: dict[str, Any] = {
        "name": reporting.dns_label(name or model.stem),
        "digest": reporting.sha256(final),
        "source_digest": reporting.sha256(model),
        "source_format": src.format,
        "recipe": recipe.to_dict(),
        "size_bytes": {"source": source_size, "optimized": opt_size},
        "size_ratio": round(opt_size / source_size, 4),
        "accuracy": accuracy,
        "gate": gate_result,
        "latency_ms": latency,
        "latency_ratio_p50": {
            k: round(latency["optimized"][k]["p50"] / latency["baseline"][k]["p50"], 4) for k in latency["baseline"]
        },
        "baseline_engine": BASELINE_ENGINES[src.format],
        "sparsity": pruning["sparsity"] if pruning else _source_sparsity(src, fp32),
        "pruning": pruning,
        "contrib_ops": reporting.contrib_ops(final),
        "inputs": sig["inputs"],
        "outputs": sig["outputs"],
        # This process only: a forked worker's maxrss includes the parent's pages at fork time.
        "peak_rss_bytes": self_rss,
        "versions": reporting.versions(),
    }
    (dest / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (dest / "summary.md").write_text(reporting.summary_markdown(report))
    reporting.chart(report, dest / "chart.png")
    return report


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
        missing = [n for n in src.input_names if n not in declared]
        if missing:
            raise OptimizeError(f"export.input_shapes has no shape for model inputs {missing}")
        rng = np.random.default_rng(0)
        return {n: rng.standard_normal((2, *declared[n])).astype(np.float32) for n in src.input_names}
    raise OptimizeError(
        "no example inputs: give --validation or --calibration data, or export.input_shapes in the recipe"
    )


def _baseline_runner(src: sources.Source) -> Any:
    from optimize.runtime import ort_runner, ort_session, torch_runner

    if src.is_torch:
        return torch_runner(src.runner())
    return ort_runner(ort_session(src.path, 1), src.input_names)


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


def _probe(run: Any, example: dict[str, np.ndarray], src: sources.Source) -> np.ndarray:
    """Run the source model once on the example rows: a wrong input shape fails here, fast."""
    try:
        return np.asarray(run(*example.values()))
    except Exception as exc:
        shapes = ", ".join(f"'{k}' {list(v.shape)} {v.dtype}" for k, v in example.items())
        raise OptimizeError(f"shape mismatch: the model rejects input {shapes}: {_first(exc)}") from None


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
