"""report.json, a Markdown summary and a PNG chart of baseline vs optimized."""

from __future__ import annotations

import hashlib
import platform
import re
import resource
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import optimize
from optimize import fidelity


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dns_label(text: str) -> str:
    """A DNS-1123 label (lowercase alphanumerics and '-', at most 63) from any text."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return label or "model"


def contrib_ops(path: Path) -> dict[str, int]:
    """How many of each ONNX Runtime contrib op (com.microsoft domain) the graph uses: what fusion and
    quantization made of it, and why it needs ONNX Runtime to run."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(Counter(n.op_type for n in graph.node if n.domain == "com.microsoft").items()))


def signature(path: Path) -> dict[str, list[dict[str, Any]]]:
    """ONNX input/output names, numpy dtypes and shapes (symbolic dims as null)."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            out.append(
                {
                    "name": v.name,
                    "dtype": str(helper.tensor_dtype_to_np_dtype(t.elem_type)),
                    "shape": [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim],
                }
            )
        return out

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss does not
    (a child keeps the peak of the parent it was forked from, e.g. a large test runner)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def versions() -> dict[str, str]:
    found = {}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxscript", "numpy"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            found[pkg] = "absent"
    found["python"] = platform.python_version()
    found["modelstack"] = optimize.__version__
    return found


def summary_markdown(report: dict[str, Any]) -> str:
    lat = report["latency_ms"]
    size = report["size_bytes"]

    lines = [
        f"# {report['name']}: {report['recipe']['name']}",
        "",
        f"- digest: `{report['digest']}`",
        f"- size: {size['source'] / 1e6:.2f} MB -> {size['optimized'] / 1e6:.2f} MB (ratio {report['size_ratio']:.3f})",
        *_fidelity_lines(report),
        *_int8_lines(report),
        *_sequence_lines(report.get("sequence")),
        f"- sparsity of prunable weights: {report['sparsity']:.3f}",
        "",
        "| batch | baseline p50 ms | baseline p99 ms | optimized p50 ms | optimized p99 ms | p50 ratio |",
        "|---|---|---|---|---|---|",
    ]
    for key in lat.get("baseline", {}):
        b, o = lat["baseline"][key], lat["optimized"][key]
        lines.append(
            f"| {key[1:]} | {b['p50']:.3f} | {b['p99']:.3f} | {o['p50']:.3f} | {o['p99']:.3f} "
            f"| {o['p50'] / b['p50']:.3f} |"
        )
    if report.get("pruning") and "note" in report["pruning"]["latency"]:
        lines += ["", f"Pruning: {report['pruning']['latency']['note']}."]
    lines += _compression_lines(report.get("compression"))
    lines += _search_lines(report.get("search"))
    lines += [
        "",
        f"Baseline: {report['baseline_engine']}; optimized: ONNX Runtime CPU; "
        f"{report['recipe']['benchmark']['threads']} threads each, each in its own process.",
    ]
    return "\n".join(lines) + "\n"


def _sequence_lines(seq: dict[str, Any] | None) -> list[str]:
    if not seq:
        return []
    inputs = ", ".join(f"`{n}`" for n in seq["inputs"])
    if seq["dynamic"]:
        return [f"- sequence length: dynamic on {inputs} ({seq['evidence']}; checked against the source at "
                f"{seq['checked_at']} steps)"]  # fmt: skip
    return [f"- sequence length: fixed at {seq['length']} on {inputs} ({seq['evidence']}, but {seq['reason']})"]


def chart(report: dict[str, Any], path: Path) -> None:
    """Three panels: size, p50 latency per batch size, accuracy; a fourth with the fine-tune's loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A fixed date keeps the PNG's metadata stable between identical builds.
    tune = (report.get("compression") or {}).get("finetune")
    fig, axes = plt.subplots(1, 4 if tune else 3, figsize=(14.5 if tune else 11, 3.4))
    colors = ["#8c8c8c", "#2a7ab0"]
    size = report["size_bytes"]
    axes[0].bar(["baseline", "optimized"], [size["source"] / 1e6, size["optimized"] / 1e6], color=colors)
    axes[0].set_title("size (MB)")
    lat = report["latency_ms"]
    keys = list(lat.get("baseline", {}))
    xs = range(len(keys))
    axes[1].bar(
        [x - 0.2 for x in xs], [lat["baseline"][k]["p50"] for k in keys], 0.4, label="baseline", color=colors[0]
    )
    axes[1].bar(
        [x + 0.2 for x in xs], [lat["optimized"][k]["p50"] for k in keys], 0.4, label="optimized", color=colors[1]
    )
    axes[1].set_xticks(list(xs), [f"batch {k[1:]}" for k in keys])
    axes[1].set_title("p50 latency (ms)")
    axes[1].legend(fontsize=8)
    acc = report["accuracy"]
    if acc.get("baseline") is not None:
        axes[2].bar(["baseline", "optimized"], [acc["baseline"] * 100, acc["optimized"] * 100], color=colors)
        axes[2].set_ylim(max(0.0, min(acc["baseline"], acc["optimized"]) * 100 - 5), 100)
        axes[2].set_title("top-1 accuracy (%)")
    else:  # the task's first gate check, against its threshold
        check = report["fidelity"]["checks"][0]
        axes[2].bar([check["metric"]], [check["value"]], color=colors[1])
        axes[2].axhline(check["threshold"], color="#c0392b", linestyle="--", label=f"gate {check['threshold']:g}")
        axes[2].set_ylim(0, max(1.0, check["value"], check["threshold"]) * 1.05)
        axes[2].set_title(f"{fidelity.label(check['metric'], acc)} ({report['fidelity']['task']})", fontsize=9)
        axes[2].legend(fontsize=8)
    if tune:
        steps, losses = zip(*tune["curve"], strict=True)
        axes[3].plot(steps, losses, color=colors[1])
        axes[3].set_yscale("log")
        axes[3].set_xlabel("step")
        axes[3].set_title("fine-tune loss (vs the source's outputs)", fontsize=9)
    fig.suptitle(f"{report['name']} - {report['recipe']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _fidelity_lines(report: dict[str, Any]) -> list[str]:
    """The task (and why), each gate check, the top-1 figures when labels were given."""
    acc, fid = report["accuracy"], report["fidelity"]
    outputs = fid.get("outputs") or [{"name": None, "task": fid["task"], "task_reason": fid["task_reason"]}]
    several = len(outputs) > 1
    lines = []
    for out in outputs:
        which = f" of `{out['name']}`" if several else ""
        lines.append(f"- fidelity{which}: {out['task']} ({out['task_reason']})")
        own = [c for c in fid["checks"] if c.get("output", out["name"]) == out["name"] or not several]
        lines += [_check_line(c, acc) for c in own if c.get("output", "") is not None]
    metric = fid.get("metric")
    if metric:
        lines.append(f"- recipe metric `{metric['function']}`: "
                     + ", ".join(f"{k} {v:.4f}" for k, v in metric["figures"].items()))  # fmt: skip
        lines += [_check_line(c, acc) for c in fid["checks"] if "output" in c and c["output"] is None]
    if acc.get("baseline") is not None:
        lines.append(f"- top-1: {acc['baseline'] * 100:.2f}% -> {acc['optimized'] * 100:.2f}%")
    if fid.get("note"):
        lines.append(f"  - {fid['note']}")
    return lines


def _check_line(check: dict[str, Any], acc: dict[str, Any]) -> str:
    bound = ">=" if check["kind"] == "min" else "<="
    name = check.get("label") or fidelity.label(check["metric"], acc)
    verdict = "pass" if check["passed"] else "FAIL"
    return f"  - {name}: {check['value']:.4f} (gate {bound} {check['threshold']:g}: {verdict})"


def _int8_lines(report: dict[str, Any]) -> list[str]:
    plan = report.get("int8")
    if not plan:
        return []
    where = "detected on the build machine" if plan["detected"] else "stated in the recipe"
    return [f"- int8 for {plan['target_cpu']} ({where}): reduce_range {str(plan['reduce_range']).lower()}; "
            f"{plan['why']}"]  # fmt: skip


def _compression_lines(comp: dict[str, Any] | None) -> list[str]:
    """Parameters and MACs after each torch stage, what distill and prune kept, the fine-tune's run."""
    if not comp:
        return []

    def num(v: int | None) -> str:
        return "-" if v is None else f"{v:,}"

    lines = ["", "| stage | parameters | MACs (one row) |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {num(s['params'])} | {num(s['macs'])} |" for s in comp["stages"]]
    distill = comp.get("distill")
    if distill and distill["kind"] == "layers":
        lines.append(f"\nDistilled: kept blocks {distill['kept']} of the teacher's {distill['teacher_layers']} "
                     f"(`{distill['stack']}`), initialised from the teacher's weights.")  # fmt: skip
    elif distill and distill["kind"] == "student":
        lines.append(f"\nDistilled into the student `{distill['student']}`.")
    prune = comp.get("prune")
    if prune and prune.get("layers"):
        kept = ", ".join(f"{k} {v['kept']}/{v['channels']}" for k, v in prune["layers"].items())
        left = f"; left whole: {', '.join(prune['kept_whole'])}" if prune["kept_whole"] else ""
        lines.append(f"\nStructured pruning ({prune['scope']}, {prune['importance']}): channels kept {kept}{left}.")
    tune = comp.get("finetune")
    if tune:
        blocks = f" and its {tune['matched_blocks']} kept blocks' outputs" if tune.get("matched_blocks") else ""
        lines.append(f"\nFine-tuned on the teacher's outputs{blocks} ({tune['rows']} rows): {tune['steps']} of "
                     f"{tune['steps_asked']} steps in {tune['seconds']:.1f} s (stopped by {tune['stopped_by']}), "
                     f"loss {tune['loss_first']:.4g} -> {tune['loss_last']:.4g}.")  # fmt: skip
    lat = comp["latency_torch"]
    lines.append(f"\ntorch p50 at batch 1: {lat['p50_ms_dense']:.3f} ms -> {lat['p50_ms_pruned']:.3f} ms "
                 f"(ratio {lat['ratio']:.2f}).")  # fmt: skip
    return lines


def _search_lines(search: dict[str, Any] | None) -> list[str]:
    """The `auto` search: every candidate with its figures, and which won."""
    if not search:
        return []
    lines = ["", f"Search ({search['seconds']:.0f} s of a {search['time_budget_s']:g} s budget): the fastest candidate "
             "that passes the gate wins.", "", "| candidate | gate | figures | b1 p50 ms | size MB | seconds |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for c in search["candidates"]:
        if "skipped" in c:
            lines.append(f"| {c['name']} | skipped: {c['skipped']} | | | | |")
            continue
        verdict = ("**chosen**" if c.get("chosen") else "pass") if c["passed"] else "fail: " + ", ".join(c["failed"])
        figures = ", ".join(f"{k} {v:.4f}" for k, v in c["figures"].items())
        p50 = "-" if c["p50_b1_ms"] is None else f"{c['p50_b1_ms']:.3f}"
        size = c["size_bytes"] / 1e6
        trained = f" (trained {c['trained_s']:.1f} s, MACs x{c['macs_ratio']:.2f})" if "trained_s" in c else ""
        name = c["name"] + trained
        lines.append(f"| {name} | {verdict} | {figures} | {p50} | {size:.2f} | {c['seconds']:.1f} |")
    return lines
