"""torch -> ONNX with a dynamic batch dimension, checked, as one self-contained file.

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
           output_batch_axis: int = 0) -> Any:
    """Export to ONNX and return the checked onnx.ModelProto (weights inlined).

    fuse: run the transformer fusions (optimize.fusion) while the export still carries its shapes.
    output_batch_axis: where the first output keeps the batch (1 for a time-major [T, batch, C]); the
    TorchScript exporter is told, the dynamo exporter infers it."""
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
            _export_torchscript(source, args, spec, raw, output_batch_axis)
        else:
            _export_dynamo(source, args, spec, raw)
    model = onnx.load(str(raw), load_external_data=True)
    if fuse:
        from optimize.fusion import fuse_transformer

        model = fuse_transformer(model, [a.numpy() for a in args])
    _tidy(model)
    if model.ByteSize() > MAX_PROTO:
        raise OptimizeError("exported model is over 2 GB and cannot be stored as one self-contained model.onnx")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise OptimizeError(f"exported ONNX model fails onnx.checker: {_first(exc)}") from None
    return model


def _export_dynamo(source: Source, args: tuple, spec: ExportSpec, path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    model = source.model
    dynamic: Any = None
    if source.format == "exported_program":
        if spec.dynamic_batch and not _has_dynamic_batch(model):
            # A .pt2 saved with static shapes: re-trace its module with a batch Dim.
            try:
                model = torch.export.export(
                    model.module(), args, dynamic_shapes=tuple({0: batch} for _ in args), strict=False
                )
            except Exception as exc:
                raise OptimizeError(
                    "the .pt2 program was exported with a static batch size and cannot be made dynamic "
                    f"({_first(exc)}); export it with dynamic_shapes or set export.dynamic_batch: false"
                ) from None
    elif spec.dynamic_batch:
        dynamic = tuple({0: batch} for _ in args)
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


def _export_torchscript(source: Source, args: tuple, spec: ExportSpec, path: Path, output_batch_axis: int) -> None:
    import torch

    names = source.input_names
    axes = {n: {0: "batch"} for n in names} if spec.dynamic_batch else None
    if axes is not None:
        axes["output"] = {output_batch_axis: "batch"}
    try:
        torch.onnx.export(
            source.model,
            args,
            str(path),
            dynamo=False,
            opset_version=min(spec.opset, 20),  # the TorchScript exporter stops at opset 20
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
        )
    except Exception as exc:
        raise OptimizeError(
            f"the TorchScript exporter cannot export this model ({_first(exc)}); it does not handle every model "
            "(traced transformer encoders fail in torch 2.13): save it with torch.export.save as a .pt2 instead"
        ) from None


def _has_dynamic_batch(ep: Any) -> bool:
    import torch

    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
            val = node.meta.get("val")
            if val is not None and val.dim() and not isinstance(val.shape[0], torch.SymInt):
                return False
    return True


def _tidy(model: Any) -> None:
    """Stable output names and no stale shape annotations.

    The dynamo exporter names outputs after internal nodes (e.g. 'linear_3'); the
    serving signature should not change when the architecture does. Its
    value_info can disagree with ONNX shape inference, which the quantizer runs,
    so it is dropped (ORT infers shapes on load anyway).
    """
    graph = model.graph
    del graph.value_info[:]
    outs = list(graph.output)
    for i, out in enumerate(outs):
        new = "output" if len(outs) == 1 else f"output_{i}"
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
