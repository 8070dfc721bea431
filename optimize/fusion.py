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


def fuse_transformer(model: Any, example: list[Any] | None = None) -> Any:
    """The fused onnx.ModelProto (the report lists the contrib ops that came of it). `example`: input rows,
    in the graph's input order, on which a padding mask is recognised (_padding_mask_as_index)."""
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
    fused = ir.to_proto(graph)
    if example is not None:
        _padding_mask_as_index(fused, example)
    return fused


def _padding_mask_as_index(model: Any, example: list[Any]) -> None:
    """Hand a padding mask to Attention as `mask_index`, not as the additive `attention_bias` it was fused with.

    ORT's int8 QAttention has no attention_bias input: the quantizer drops it, and every padded row of a
    Hugging Face encoder would then attend to its padding (a real MiniLM fell to cosine 0.72). Attention
    takes the same mask as a 2-D `mask_index` [batch, seq] (0 = padding), which QAttention keeps. The
    bias is replaced only where, on the example rows, it is exactly that mask: 0 where the mask is 1,
    very negative where it is 0, for every query position (a causal mask differs along the queries and
    is left alone)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = model.graph
    biased = [n for n in graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"
              and len(n.input) > 5 and n.input[5] and not n.input[3]]  # fmt: skip
    masks = [i.name for i in graph.input if len(i.type.tensor_type.shape.dim) == 2
             and i.type.tensor_type.elem_type in (TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL)]  # fmt: skip
    if not biased or not masks:
        return
    biases = sorted({n.input[5] for n in biased})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(b) for b in biases)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: np.asarray(a) for i, a in zip(session.get_inputs(), example, strict=True)}
    values = dict(zip(biases, session.run(biases, feed), strict=True))
    for mask in masks:
        if not np.isin(feed[mask], (0, 1)).all():  # token ids, not a mask (BERT's [PAD] id is 0 too)
            continue
        padding = np.asarray(feed[mask]) == 0
        matching = {b for b, v in values.items() if _is_padding_bias(v, padding)}
        if not matching:
            continue
        cast = helper.make_node("Cast", [mask], [f"{mask}_as_mask_index"], to=TensorProto.INT32,
                                name=f"{mask}_as_mask_index")  # fmt: skip
        graph.node.insert(0, cast)
        for node in biased:
            if node.input[5] in matching:
                node.input[3] = cast.output[0]
                node.input[5] = ""
                while node.input and not node.input[-1]:
                    node.input.pop()
        return


def _is_padding_bias(bias: Any, padding: Any) -> bool:
    """Whether an additive attention bias [batch, heads|1, queries|1, keys] only masks the padded keys."""
    import numpy as np

    if bias.ndim != 4 or bias.shape[0] != padding.shape[0] or bias.shape[-1] != padding.shape[1]:
        return False
    masked = np.broadcast_to(padding[:, None, None, :], bias.shape)
    return bool(np.all(bias[~masked] == 0) and np.all(bias[masked] <= -1e4))


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
