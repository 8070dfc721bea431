"""torch -> ONNX with a dynamic batch dimension (and sequence length, where asked), checked, as one
self-contained file.

.pt2 programs and state_dict modules go through the dynamo exporter (needs
onnxscript); TorchScript can only go through the TorchScript exporter, which
cannot handle every model, so its failures point the user to .pt2.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from optimize.errors import OptimizeError
from optimize.recipe import ExportSpec
from optimize.sources import Source, _first

MAX_PROTO = 2**31 - 1  # protobuf's limit for one file


def export(source: Source, example: dict[str, np.ndarray], spec: ExportSpec, workdir: Path, fuse: bool = False,
           output_batch_axes: list[int] | None = None, output_names: list[str] | None = None,
           sequence: tuple[str, ...] = ()) -> Any:
    """Export to ONNX and return the checked onnx.ModelProto (weights inlined).

    fuse: run the transformer fusions (optimize.fusion) while the export still carries its shapes.
    output_batch_axes: where each output keeps the batch (1 for a time-major [T, batch, C]); the
    TorchScript exporter is told, the dynamo exporter infers it.
    output_names: the names several outputs get (a dict's keys); else `output`, or `output_0`, `output_1`...
    sequence: inputs whose axis 1 is exported as a dynamic `sequence` dimension (optimize.sequence)."""
    import onnx
    import torch

    raw = workdir / "export" / "model.onnx"
    raw.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(example[n]) for n in source.input_names)
    # The exporters print progress and deprecation warnings; the CLI has its own display.
    # (and logs optional-op registration notes such as 'torchvision is not installed').
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # The exporter's onnxscript optimizer warns "Evaluation failed" for each constant it cannot fold
    # (it leaves the node as it is); the fold is an optimization, not an error.
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if source.format == "torchscript":
            _export_torchscript(source, args, spec, raw, output_batch_axes or [0], output_names, sequence)
        else:
            _export_dynamo(source, args, spec, raw, sequence)
    model = onnx.load(str(raw), load_external_data=True)
    if spec.dynamic_batch:
        _check_dynamic_batch(model)
    _check_dynamic_sequence(model, sequence)
    if fuse:
        from optimize.fusion import fuse_transformer

        model = fuse_transformer(model, [a.numpy() for a in args])
    _tidy(model, output_names)
    if model.ByteSize() > MAX_PROTO:
        raise OptimizeError("exported model is over 2 GB and cannot be stored as one self-contained model.onnx")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise OptimizeError(f"exported ONNX model fails onnx.checker: {_first(exc)}") from None
    return model


def _export_dynamo(source: Source, args: tuple, spec: ExportSpec, path: Path, sequence: tuple[str, ...]) -> None:
    import torch

    dynamic = _dynamic_shapes(source.input_names, spec, sequence, args)
    model = source.model
    if source.format == "exported_program":
        if dynamic is not None and not _is_dynamic(model, dynamic):
            # A .pt2 saved with static shapes: re-trace its module with the Dims.
            try:
                model = torch.export.export(model.module(), args, dynamic_shapes=dynamic, strict=False)
            except Exception as exc:
                fix = "a sequence Dim on axis 1" if sequence else "a batch Dim, or set export.dynamic_batch: false"
                raise OptimizeError(
                    f"the .pt2 program was traced at fixed shapes its graph keeps ({_first(exc)}); save it "
                    f"with torch.export dynamic_shapes holding {fix}"
                ) from None
        dynamic = None  # the program carries its own
    try:
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=True,
            opset_version=spec.opset,
            dynamic_shapes=dynamic,
            external_data=True,
            verbose=False,
        )
    except OptimizeError:
        raise
    except Exception as exc:
        raise OptimizeError(f"torch.onnx dynamo export failed: {_first(exc)}") from None


def _dynamic_shapes(names: list[str], spec: ExportSpec, sequence: tuple[str, ...], args: tuple) -> Any:
    """torch.export dynamic_shapes: a batch Dim on axis 0 and one sequence Dim (up to the data's length)
    on axis 1 of the sequence inputs; None when everything is static."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    lengths = {a.shape[1] for n, a in zip(names, args, strict=True) if n in sequence}
    steps = torch.export.Dim("sequence", min=1, max=max(lengths)) if lengths else None
    shapes: list[dict[int, Any] | None] = []
    for name in names:
        axes: dict[int, Any] = {0: batch} if spec.dynamic_batch else {}
        if name in sequence:
            axes[1] = steps
        shapes.append(axes or None)
    return tuple(shapes) if any(shapes) else None


def _is_dynamic(ep: Any, shapes: tuple) -> bool:
    """Whether the program's inputs are already symbolic on every axis `shapes` asks for."""
    import torch

    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
    for node, axes in zip(placeholders, shapes, strict=False):
        val = node.meta.get("val")
        if val is not None and any(not isinstance(val.shape[a], torch.SymInt) for a in (axes or {})):
            return False
    return True


def _check_dynamic_batch(model: Any) -> None:
    """The exporters fall back to the example's fixed shape when the model's code turns the batch size
    into a constant; the graph would then reject every other batch size."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_param:
            raise OptimizeError(
                f"the exported graph fixes the batch size of input '{value.name}' to {dims[0].dim_value}: the "
                "model's code makes it a constant (often len(x) or x.shape[0] in a reshape or view; -1 "
                "there keeps it dynamic); fix that, or set export.dynamic_batch: false"
            )


def _check_dynamic_sequence(model: Any, sequence: tuple[str, ...]) -> None:
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in sequence and len(dims) > 1 and not dims[1].dim_param:
            raise OptimizeError(f"the model's code fixes the length of input '{value.name}' at {dims[1].dim_value} "
                                "(the exported graph takes no other)")  # fmt: skip


def _export_torchscript(source: Source, args: tuple, spec: ExportSpec, path: Path, output_batch_axes: list[int],
                        output_names: list[str] | None, sequence: tuple[str, ...]) -> None:  # fmt: skip
    import torch

    names = source.input_names
    outputs = exported_output_names(len(output_batch_axes), output_names)
    axes: dict[str, dict[int, str]] | None = None
    if spec.dynamic_batch:
        axes = {n: {0: "batch"} for n in names}
        axes.update({o: {a: "batch"} for o, a in zip(outputs, output_batch_axes, strict=True)})
    if sequence:
        axes = axes or {}
        for n in sequence:
            axes.setdefault(n, {})[1] = "sequence"
    try:
        torch.onnx.export(
            source.model,
            args,
            str(path),
            dynamo=False,
            opset_version=min(spec.opset, 20),  # the TorchScript exporter stops at opset 20
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
        )
    except Exception as exc:
        raise OptimizeError(
            f"the TorchScript exporter cannot export this model ({_first(exc)}); it does not handle every model "
            "(traced transformer encoders fail in torch 2.13): save it with torch.export.save as a .pt2 instead"
        ) from None


def exported_output_names(count: int, given: list[str] | None) -> list[str]:
    if count == 1:
        return ["output"]
    return list(given) if given and len(given) == count else [f"output_{i}" for i in range(count)]


def _tidy(model: Any, output_names: list[str] | None = None) -> None:
    """Stable output names and no stale shape annotations.

    The dynamo exporter names outputs after internal nodes (e.g. 'linear_3'); the
    serving signature should not change when the architecture does. Several outputs
    take the source's dict keys where it gave them. Its
    value_info can disagree with ONNX shape inference, which the quantizer runs,
    so it is dropped (ORT infers shapes on load anyway).
    """
    graph = model.graph
    del graph.value_info[:]
    outs = list(graph.output)
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.input}
    if output_names and set(output_names) & (taken - {o.name for o in outs}):
        output_names = None  # a key is already the name of another value in the graph: numbered names
    for out, new in zip(outs, exported_output_names(len(outs), output_names), strict=True):
        old = out.name
        if old == new:
            continue
        for node in graph.node:
            for j, name in enumerate(node.output):
                if name == old:
                    node.output[j] = new
            for j, name in enumerate(node.input):
                if name == old:
                    node.input[j] = new
        out.name = new
