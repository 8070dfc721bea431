"""Transformer fusions: attention, SkipLayerNorm and Gelu into ONNX Runtime's contrib ops.

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

    if any(n.op_type == "Attention" and n.domain in ("", "ai.onnx") for n in model.graph.node):
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
    return ir.to_proto(graph)


def _drop_uniform_qkv_sizes(graph: Any) -> None:
    """Attention's qkv_hidden_sizes [h, h, h] says what the default already means; ORT's quantizer
    leaves any Attention that carries the attribute in float, so drop it where all three are equal."""
    for node in graph.graph:
        attr = node.attributes.get("qkv_hidden_sizes")
        if node.op_type == "Attention" and attr is not None and len(set(attr.as_ints())) == 1:
            del node.attributes["qkv_hidden_sizes"]
