"""Transformer fusions: attention and Gelu into ONNX Runtime's contrib ops.

ONNX Runtime fuses LayerNorm and Gelu patterns itself at load time, but not attention as the dynamo
exporter writes it: scaled_dot_product_attention becomes Reshape/Transpose/MatMul/Softmax with part of
the shape computed at run time. onnxscript's ORT fusions recognise it when every intermediate value
carries the exporter's symbolic shapes (the same batch dimension everywhere), so this runs on the raw
export, before those annotations are dropped. The fused `Attention` takes Q, K and V as one packed
weight, which ONNX Runtime's quantizer turns into int8 `QAttention`.

A graph with nothing to fuse (a CNN, an MLP), or one exported at opset 23 whose attention is already
ONNX's own `Attention` op, comes back unchanged. The fused ops are in the
`com.microsoft` domain: the artifact then needs ONNX Runtime to run, which is what serves it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from optimize.errors import OptimizeError
from optimize.sources import _first

FOLD_LIMIT = 1 << 28  # elements: fold every constant subgraph, including packed weights


def fuse_transformer(model: Any) -> Any:
    """The fused onnx.ModelProto (the report lists the contrib ops that came of it)."""
    import onnx_ir as ir
    from onnx_ir.passes.common import LiftConstantsToInitializersPass
    from onnxscript.optimizer import fold_constants
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    if has_onnx_attention(model):
        # Opset 23 already has attention as one op; ORT's tools (quantizer, symbolic shape inference)
        # mistake it for their contrib Attention, so mixing contrib ops in would break quantization.
        return model
    graph = ir.from_proto(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("onnxscript").setLevel(logging.ERROR)
            optimize_for_ort(graph)
            # The attention fusion packs the Q/K/V weights with a Concat; fold it into one initializer.
            fold_constants(graph, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
            # ORT's quantizer finds weights among initializers only, not Constant nodes.
            LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(graph)
    except Exception as exc:
        raise OptimizeError(f"transformer fusion failed: {_first(exc)}; set graph.transformer_fusions: false") from None
    _drop_uniform_qkv_sizes(graph)
    _unfuse_skip_layer_norm(graph)
    return ir.to_proto(graph)


def has_onnx_attention(model: Any) -> bool:
    """Whether the onnx.ModelProto uses ONNX's own Attention op (opset 23), not ORT's contrib one."""
    return any(n.op_type == "Attention" and n.domain in ("", "ai.onnx") for n in model.graph.node)


def _drop_uniform_qkv_sizes(model: Any) -> None:
    """Attention's qkv_hidden_sizes [h, h, h] says what the default already means; ORT's quantizer
    leaves any Attention that carries the attribute in float, so drop it where all three are equal."""
    for node in model.graph:
        attr = node.attributes.get("qkv_hidden_sizes")
        if node.op_type == "Attention" and attr is not None and len(set(attr.as_ints())) == 1:
            del node.attributes["qkv_hidden_sizes"]


def _unfuse_skip_layer_norm(model: Any) -> None:
    """SkipLayerNormalization back to Add (+ bias Add) + LayerNormalization.

    onnxscript's fusion set includes it, but ONNX Runtime 1.31's CPU kernel for it is 2-4x slower than
    the two ops it replaces (one [1, 64, 256] call: 60 us against 25-31 us on 2 threads), which cost the
    int8 text encoder about 10% (docs/benchmarks.md). Only where its mean/inv_std outputs are unused.
    The skip is added before the bias: ORT's own SkipLayerNormFusion matches the bias-first order
    (MatMul, bias Add, residual Add, LayerNorm) and would fuse it straight back at the graph stage.
    """
    import onnx_ir as ir

    if model.opset_imports.get("", 0) < 17:  # LayerNormalization is an ONNX op from opset 17
        return
    graph = model.graph
    for node in list(graph):
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            continue
        outputs = list(node.outputs) + [None] * (4 - len(node.outputs))
        if any(v is not None and (v.uses() or v.is_graph_output()) for v in outputs[1:3]):
            continue
        x, skip, gamma, beta, bias = (list(node.inputs) + [None] * 5)[:5]
        epsilon = node.attributes.get("epsilon")
        total = ir.node("Add", [x, skip])
        new_nodes = [total]
        if bias is not None:
            new_nodes.append(ir.node("Add", [total.outputs[0], bias]))
        summed = new_nodes[-1].outputs[0]
        attrs = {"axis": -1, **({"epsilon": epsilon.as_float()} if epsilon is not None else {})}
        norm = ir.node("LayerNormalization", [summed, gamma, beta] if beta is not None else [summed, gamma], attrs)
        new_nodes.append(norm)
        old_values, new_values = [outputs[0]], [norm.outputs[0]]
        if outputs[3] is not None:
            old_values.append(outputs[3])
            new_values.append(summed)
        ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, old_values, new_values)
