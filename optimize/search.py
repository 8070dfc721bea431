"""The `auto` recipe: the fastest variant of a recipe that passes its gate.

After Intel Neural Compressor's accuracy-driven tuning, bounded and deterministic: a fixed list of
candidates in a fixed order (the recipe as written; reduce_range the other way; per-tensor weights;
without the transformer fusions, when they fused anything; static int8 when calibration data exists),
each built, gated and timed at batch 1 in its own process. When no int8 candidate passes, one more
keeps the few nodes that add the most error in float (per-node error of every intermediate value
against the fp32 model), and last the graph-optimized fp32 model is tried: auto compresses when it
can, and falls back to fp32 only when no int8 variant keeps the gate. No candidate starts once the
time budget is spent. Among the candidates that pass, the fastest wins; one within 5% of it that
comes earlier in the list wins instead, so timing noise does not flip a build between near-equal
variants.

A recipe that sets `finetune` grants auto a training budget: for a model whose code it has (a state_dict
with its factory) two more candidates are tried after the int8 variants, each fine-tuned on the
teacher's outputs and then int8 like the first: the model with half its channels removed (structured
pruning), and the model distilled into half its repeated blocks. Their rows say how long training took.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from optimize.errors import GateFailed, OptimizeError
from optimize.fidelity import check_name
from optimize.recipe import DistillSpec, PruneSpec, Recipe

NEAR_EQUAL = 1.05  # a candidate this close to the fastest, and earlier in the list, wins
SENSITIVITY_ROWS = 16
INT8 = ("dynamic_int8", "static_int8")
NO_FUSIONS = "no transformer fusions"
WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "Attention", "Gather", "LSTM"}


STRUCTURED = PruneSpec(method="structured", amount=0.5)


def candidates(base: Recipe, has_calibration: bool, blocks: int | None = None) -> list[tuple[str, Recipe]]:
    """(name, recipe) in the order they are tried; the base recipe's own settings come first. `blocks`: the
    length of the model's stack of repeated blocks when auto may train (None: no trained candidates)."""
    from optimize.hardware import plan_int8

    plain = base.model_copy(update={"search": None, "name": base.name})
    q = plain.quantize if plain.quantize.mode in INT8 else plain.quantize.model_copy(update={"mode": "dynamic_int8"})
    reduce_range = plan_int8(q).reduce_range

    def variant(**quantize: Any) -> Recipe:
        fuse = quantize.pop("transformer_fusions", plain.graph.transformer_fusions)
        graph = plain.graph.model_copy(update={"transformer_fusions": fuse})
        return plain.model_copy(update={"quantize": q.model_copy(update=quantize), "graph": graph})

    out = [
        (q.mode.replace("_int8", "") + "-int8", variant()),
        (f"reduce_range {str(not reduce_range).lower()}", variant(reduce_range=not reduce_range)),
        ("per-tensor weights", variant(per_channel=False)),
    ]
    if plain.graph.transformer_fusions:
        out.append((NO_FUSIONS, variant(transformer_fusions=False)))
    if has_calibration and q.mode != "static_int8":
        out.append(("static-int8", variant(mode="static_int8")))
    if blocks is not None and plain.finetune is not None:
        first = out[0][1]
        out.append(("structured 50% + fine-tune", first.model_copy(update={"prune": STRUCTURED})))
        if blocks >= 2:
            half = DistillSpec(layers=blocks // 2)
            out.append((f"distilled to {blocks // 2} of {blocks} blocks", first.model_copy(update={"distill": half})))
    out.append(("fp32", variant(mode="none")))
    return out


def run(base: Recipe, ctx: Any) -> tuple[Any, dict[str, Any]]:
    """(the chosen variant, report.json's `search`); `ctx` is the pipeline's build context."""
    spec = base.search
    assert spec is not None
    start = time.monotonic()
    tried: list[dict[str, Any]] = []
    variants: list[tuple[dict[str, Any], Any]] = []
    queue = candidates(base, has_calibration=ctx.cal is not None, blocks=_trainable_blocks(base, ctx))
    fallback = queue.pop()  # fp32: the last resort, tried last
    while queue:
        name, recipe = queue.pop(0)
        _try(name, recipe, ctx, spec, start, len(tried) + len(queue) + 2, tried, variants)
        if not queue and spec.exclude_nodes and not _int8_passed(variants) and variants:
            best = _closest(variants)
            excluded = node_sensitivity(ctx.fp32(best.recipe.graph.transformer_fusions), best.quantized_path,
                                        ctx.checked.take(SENSITIVITY_ROWS))[: spec.exclude_nodes]  # fmt: skip
            if excluded:
                q = best.recipe.quantize.model_copy(update={"exclude_nodes": tuple(excluded)})
                kept = best.recipe.model_copy(update={"quantize": q})
                queue.append((f"{len(excluded)} sensitive nodes in float", kept))
                spec = spec.model_copy(update={"exclude_nodes": 0})  # once
    if not _int8_passed(variants):  # fp32 only when no int8 variant keeps the gate: auto compresses
        _try(*fallback, ctx, spec, start, len(tried) + 1, tried, variants)
    passing = [(r, v) for r, v in variants if r["passed"]]
    if not passing:
        missed = "; ".join(f"{r['name']}: {', '.join(r['failed'])}" for r, _ in variants)
        skipped = sum("time budget" in r.get("skipped", "") for r in tried)
        cut = f", {skipped} not tried within search.time_budget_s" if skipped else ""
        raise GateFailed(f"accuracy gate failed: no auto candidate passes ({missed}{cut}); nothing was published")
    fastest = min(r["p50_b1_ms"] for r, _ in passing)
    row, chosen = next((r, v) for r, v in passing if r["p50_b1_ms"] <= fastest * NEAR_EQUAL)
    row["chosen"] = True
    chosen.recipe = chosen.recipe.model_copy(update={"name": f"{base.name}: {row['name']}"[:63]})
    return chosen, {"chosen": row["name"], "seconds": round(time.monotonic() - start, 2),
                    "time_budget_s": spec.time_budget_s, "candidates": tried}  # fmt: skip


def _try(name: str, recipe: Recipe, ctx: Any, spec: Any, start: float, total: int,
         tried: list[dict[str, Any]], variants: list[tuple[dict[str, Any], Any]]) -> None:  # fmt: skip
    """Build, gate and time one candidate (unless the budget is spent), recording its row."""
    if variants and time.monotonic() - start > spec.time_budget_s:  # the first candidate always runs
        tried.append({"name": name, "skipped": f"time budget of {spec.time_budget_s:g} s spent"})
        return
    if name == NO_FUSIONS and not _fused(ctx):
        tried.append({"name": name, "skipped": "the export has nothing to fuse"})
        return
    ctx.say(f"auto {len(tried) + 1}/{total}: {name}")
    began = time.monotonic()
    where = ctx.work / "search" / f"c{len(tried) + 1}"
    trained = None
    if recipe.prune.method != "none" or recipe.distill is not None:
        from dataclasses import replace

        from optimize import compress

        try:
            working, trained = compress.run(recipe, ctx.compress_inputs, ctx.say)
        except OptimizeError as exc:  # e.g. nothing to prune in this model: a candidate that does not apply
            tried.append({"name": name, "skipped": str(exc)})
            return
        variant = replace(ctx, working=working, exports={}, sequences={}).variant(recipe, where)
        variant.compression = trained
    else:
        variant = ctx.variant(recipe, where)
    checks = variant.fidelity["checks"]
    passed = all(c["passed"] for c in checks)
    several = len(variant.fidelity["outputs"]) > 1
    row = {"name": name, "mode": recipe.quantize.mode, "passed": passed,
           "failed": [check_name(c, several) for c in checks if not c["passed"]],
           "figures": {check_name(c, several): round(c["value"], 6) for c in checks},
           "p50_b1_ms": ctx.latency(variant.path, spec.iterations) if passed else None,
           "size_bytes": variant.path.stat().st_size}  # fmt: skip
    if trained is not None:
        row["trained_s"] = trained["finetune"]["seconds"]
        row["macs_ratio"] = round(trained["stages"][-1]["macs"] / trained["stages"][0]["macs"], 4)
    row["seconds"] = round(time.monotonic() - began, 2)
    tried.append(row)
    variants.append((row, variant))


def _trainable_blocks(base: Recipe, ctx: Any) -> int | None:
    """The model's number of repeated blocks (0: none) when auto may train candidates: the recipe grants a
    budget (finetune), the model's code is at hand and there are rows to train on; else None."""
    given = ctx.compress_inputs
    if base.finetune is None or given is None or not given.training or ctx.src.format != "state_dict":
        return None
    from optimize.students import block_stack

    stack = block_stack(ctx.src.model)
    return len(stack[1]) if stack else 0


def _fused(ctx: Any) -> bool:
    """Whether the transformer fusions changed the export (a CNN or an MLP has nothing to fuse)."""
    from optimize.report import contrib_ops

    return bool(contrib_ops(ctx.fp32(True)))


def _int8_passed(variants: list[tuple[dict[str, Any], Any]]) -> bool:
    return any(r["passed"] and r["mode"] in INT8 for r, _ in variants)


def _closest(variants: list[tuple[dict[str, Any], Any]]) -> Any:
    """The int8 candidate whose gate checks come closest to passing (least total shortfall), among those built
    from the source's own export (a trained candidate's graph has other shapes than the fp32 it is compared to)."""

    def shortfall(v: Any) -> float:
        return sum(max(0.0, (c["threshold"] - c["value"]) if c["kind"] == "min" else (c["value"] - c["threshold"]))
                   for c in v.fidelity["checks"])  # fmt: skip

    return min((v for r, v in variants if r["mode"] in INT8 and v.compression is None), key=shortfall)


def node_sensitivity(fp32: Path, quantized: Path, feed: dict[str, np.ndarray]) -> list[str]:
    """fp32 node names, most sensitive first: the error a quantized node adds to its output
    (the error of its output minus the largest of its inputs'), over values both graphs share."""
    import onnx
    import onnxruntime as ort

    ref, quant = onnx.load(str(fp32)), onnx.load(str(quantized))
    inits = {i.name for i in ref.graph.initializer}
    produced_q = {o for n in quant.graph.node for o in n.output}
    float_values = _float_values(ref)
    shared = [o for n in ref.graph.node for o in n.output if o in produced_q and o in float_values]
    # The quantizer keeps each node's output name, so a weight-bearing node is compared output to output.
    targets = [n for n in ref.graph.node if n.name and n.op_type in WEIGHT_OPS and n.output[0] in shared
               and any(i in inits for i in n.input)]  # fmt: skip
    values = {}
    for model in (ref, quant):
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in shared)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        outs = sess.run(shared, {n: a for n, a in zip(names, feed.values(), strict=True)})
        values[id(model)] = dict(zip(shared, outs, strict=True))
    f, q = values[id(ref)], values[id(quant)]

    def error(name: str) -> float:
        """Mean over rows of ||q - f|| / ||f||, so that rows of small values count as much as large ones
        (an outlier weight that zeroes a layer's other weights shows on those); a row far below the
        typical size (an all-zero ReLU row) counts as 1% of the mean."""
        ref_v = np.asarray(f[name], np.float64).reshape(len(f[name]) if np.ndim(f[name]) else 1, -1)
        q_v = np.asarray(q[name], np.float64).reshape(ref_v.shape)
        norms = np.linalg.norm(ref_v, axis=1)
        norms = np.maximum(norms, max(0.01 * float(norms.mean()), 1e-12))
        return float((np.linalg.norm(q_v - ref_v, axis=1) / norms).mean())

    added = {}
    for node in targets:
        inputs = [error(i) for i in node.input if i in f and i not in inits]
        added[node.name] = error(node.output[0]) - max(inputs, default=0.0)
    return sorted(added, key=lambda n: -added[n])


def _float_values(model: Any) -> set[str]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name for v in (*g.value_info, *g.output) if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
