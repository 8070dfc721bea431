"""The optimize pipeline on the models users really bring (issue 13), each built with the default
quantization (int8 dynamic) and held to what that should give: Hugging Face encoders as sentence
embedders (BERT, DistilBERT, RoBERTa, and the pretrained all-MiniLM-L6-v2 on real English text),
a BiGRU tagger with a time-major output and a ResNet-style CNN with BatchNorm."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from optimize.pipeline import build
from tests.optimize import architectures as arch
from tests.optimize.conftest import LOOSE_GATE, fast_recipe, run_example

ROOT = Path(__file__).resolve().parents[2]
# Measured about 0.24 for the three small encoders. Before embedding tables were quantized (int8
# Gather) they stayed fp32 and these builds came out at 0.64-0.76 of the source.
ENCODER_SIZE_RATIO = 0.30
# The issue's target for MiniLM (0.248 measured with QAttention given the padding mask).
MINILM_SIZE_RATIO = 0.27
MIN_COSINE = 0.99


def _initializers(path: Path) -> list[onnx.TensorProto]:
    return list(onnx.load(str(path)).graph.initializer)


def _check_embedding_fidelity(report: dict) -> None:
    fidelity, accuracy = report["fidelity"], report["accuracy"]
    # Unit-norm rows and no labels: the task is inferred, not stated in the recipe.
    assert report["recipe"]["gate"]["task"] == "auto"
    assert fidelity["task"] == "embedding", fidelity["task_reason"]
    assert "unit" in fidelity["task_reason"]
    checks = {c["metric"]: c for c in fidelity["checks"]}
    assert {"cosine_mean", "cosine_min"} <= set(checks) and all(c["passed"] for c in checks.values())
    assert checks["cosine_mean"]["value"] == accuracy["cosine_mean"]
    assert accuracy["cosine_mean"] >= MIN_COSINE
    assert accuracy["cosine_min"] >= 0.95
    assert accuracy["cosine_min"] <= accuracy["cosine_mean"] <= 1.0 + 1e-6
    assert 0 < accuracy["relative_error"] < 0.2  # int8 changes the output, a little


def _check_padding_is_masked(model: Path, inputs: dict[str, np.ndarray], first_word: int, vocab: int) -> None:
    """Other token ids under attention_mask == 0 leave every embedding as it was: the artifact still
    applies the padding mask. Only up to int8 noise, as dynamic quantization takes one scale over the
    whole batch, padding included (MiniLM int8 with its mask: worst row 0.986; with the mask lost in
    QAttention: 0.48, and 0.86 for the small BERT)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids, mask = inputs["input_ids"][:32], inputs["attention_mask"][:32]
    noise = np.random.default_rng(7).integers(first_word, vocab, ids.shape)
    (plain,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    (noisy,) = session.run(None, {"input_ids": np.where(mask == 1, ids, noise), "attention_mask": mask})
    worst = float((plain * noisy).sum(1).min())  # rows are unit vectors
    assert worst >= 0.95, f"padding leaks into the embedding: worst-row cosine {worst:.4f}"


def _check_int8_embedding_table(model: Path, vocab: int, hidden: int) -> None:
    """The word-embedding table ships as 8-bit integers, and no fp32 copy of it is left."""
    tables = [(list(i.dims), i.data_type) for i in _initializers(model) if list(i.dims) == [vocab, hidden]]
    assert tables and all(t in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for _, t in tables), tables


@pytest.mark.parametrize("name", sorted(arch.ENCODERS))
def test_a_transformers_encoder_as_a_sentence_embedder_builds_int8(tmp_path, name):
    """BERT is saved as a .pt2 (how exported models ship), the others as a state_dict plus the
    factory that builds them (how training checkpoints ship)."""
    import torch

    factory_fn, tokens = arch.ENCODERS[name]
    model = factory_fn()
    val = arch.token_data(160, seed=1, tokens=tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "bert":
            source, factory = arch.save_pt2(model, val, tmp_path / f"{name}.pt2"), None
        else:
            source, factory = tmp_path / f"{name}.pt", f"tests.optimize.architectures:{name}"
            torch.save(model.state_dict(), source)
    arch.save_npz(tmp_path / "validation.npz", val)
    arch.save_npz(tmp_path / "calibration.npz", arch.token_data(32, seed=2, tokens=tokens))

    report = build(source, fast_recipe(), tmp_path / "out", tmp_path / "validation.npz",
                   tmp_path / "calibration.npz", factory=factory)  # fmt: skip

    assert report["recipe"]["quantize"]["mode"] == "dynamic_int8"
    assert [(i["name"], i["dtype"]) for i in report["inputs"]] == [("input_ids", "int64"), ("attention_mask", "int64")]
    # Padded token data: the sequence length is dynamic, checked at half the data's. BERT's .pt2 was saved
    # with a dynamic batch only, and its graph keeps the length it was traced at: that is reported.
    sequence = report["sequence"]
    assert sequence["inputs"] == ["input_ids", "attention_mask"] and "padding mask" in sequence["evidence"]
    if name == "bert":
        assert not sequence["dynamic"] and "the .pt2 program was traced at fixed shapes" in sequence["reason"]
        assert [i["shape"] for i in report["inputs"]] == [[None, arch.SEQ_LEN]] * 2
    else:
        assert sequence["dynamic"] and sequence["checked_at"] == arch.SEQ_LEN // 2, sequence
        assert [i["shape"] for i in report["inputs"]] == [[None, None]] * 2
    assert report["outputs"][0]["shape"] == [None, arch.HIDDEN]
    # Attention fused and quantized in every layer; the projections and FFN are int8 matmuls.
    assert report["contrib_ops"].get("QAttention") == arch.LAYERS, report["contrib_ops"]
    assert report["contrib_ops"].get("DynamicQuantizeMatMul", 0) >= 2 * arch.LAYERS
    assert report["size_ratio"] <= ENCODER_SIZE_RATIO
    _check_int8_embedding_table(tmp_path / "out" / "model.onnx", arch.VOCAB, arch.HIDDEN)
    _check_embedding_fidelity(report)
    _check_padding_is_masked(tmp_path / "out" / "model.onnx", val, tokens.first_word, arch.VOCAB)


def test_a_plain_bert_model_builds_with_both_outputs_judged_and_any_sequence_length(tmp_path):
    """transformers' BertModel as users load it, pooler included: optional forward arguments the data
    leaves out (token_type_ids, position_ids, ...), a ModelOutput of two tensors, and an embedding task
    that has to be named (the hidden states are rank 3, which the rule takes for per-step classes)."""
    import onnxruntime as ort
    import torch

    from optimize.recipe import GateSpec

    model = arch.bert_model()
    torch.save(model.state_dict(), tmp_path / "bert.pt")
    val = arch.token_data(160, seed=1, tokens=arch.BERT_TOKENS)
    arch.save_npz(tmp_path / "validation.npz", val)
    arch.save_npz(tmp_path / "calibration.npz", arch.token_data(32, seed=2, tokens=arch.BERT_TOKENS))

    report = build(tmp_path / "bert.pt", fast_recipe(gate=GateSpec(task="embedding")), tmp_path / "out",
                   tmp_path / "validation.npz", tmp_path / "calibration.npz",
                   factory="tests.optimize.architectures:bert_model")  # fmt: skip

    assert [(i["name"], i["shape"]) for i in report["inputs"]] == [("input_ids", [None, None]),
                                                                   ("attention_mask", [None, None])]  # fmt: skip
    assert [(o["name"], o["shape"]) for o in report["outputs"]] == [
        ("last_hidden_state", [None, None, arch.HIDDEN]), ("pooler_output", [None, arch.HIDDEN])
    ]  # fmt: skip
    fidelity = report["fidelity"]
    assert [(o["name"], o["task"]) for o in fidelity["outputs"]] == [("last_hidden_state", "embedding"),
                                                                     ("pooler_output", "embedding")]  # fmt: skip
    checks = {(c["output"], c["metric"]): c for c in fidelity["checks"]}
    assert len(checks) == 4 and all(c["passed"] for c in checks.values())
    assert checks[("pooler_output", "cosine_mean")]["value"] >= MIN_COSINE
    assert report["contrib_ops"].get("QAttention") == arch.LAYERS, report["contrib_ops"]
    assert report["size_ratio"] <= ENCODER_SIZE_RATIO

    # Other lengths than the data's give what the source gives for them.
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    for length in (9, 20):
        short = {k: np.ascontiguousarray(v[:24, :length]) for k, v in val.items()}
        hidden, pooled = session.run(None, short)
        with torch.no_grad():
            expected = model(*(torch.from_numpy(v) for v in short.values())).pooler_output.numpy()
        assert hidden.shape == (24, length, arch.HIDDEN)
        cosine = (pooled * expected).sum(1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosine.min() >= 0.95, (length, cosine.min())


def test_a_time_major_gru_tagger_builds_and_is_validated_per_step(tmp_path):
    import onnxruntime as ort
    import torch

    model = arch.gru_tagger()
    source = tmp_path / "tagger.pt"
    torch.save({"model_state_dict": model.state_dict(), "epoch": 3}, source)
    x = arch.sequence_data(96, seed=1)
    arch.save_npz(tmp_path / "validation.npz", {"x": x})

    # Per-step logits show no task (they are not probabilities): a tagger is named one.
    tagger = fast_recipe(gate=LOOSE_GATE.model_copy(update={"task": "sequence"}))
    report = build(source, tagger, tmp_path / "out", tmp_path / "validation.npz",
                   factory="tests.optimize.architectures:gru_tagger")  # fmt: skip

    fidelity, accuracy = report["fidelity"], report["accuracy"]
    assert fidelity["task"] == "sequence", fidelity["task_reason"]
    assert accuracy["agreement_over"] == "steps" and accuracy["samples"] == 96
    assert [c["metric"] for c in fidelity["checks"]] == ["agreement", "sequence_exact"]
    assert all(c["passed"] for c in fidelity["checks"])
    assert accuracy["agreement"] >= 0.95
    # ONNX Runtime has no int8 GRU kernel: the recurrent weights (most of the model) stay fp32 and only
    # the head becomes an int8 matmul, so the file stays about its source's size (measured 0.98).
    assert report["contrib_ops"].get("DynamicQuantizeMatMul") == 1
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    grus = [n for n in graph.node if n.op_type == "GRU"]
    assert len(grus) == 2  # one per layer, not unrolled into steps
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert all(w in floats for n in grus for w in n.input[1:3])  # W and R
    assert report["size_ratio"] <= 1.05
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x[:3]})
    assert out.shape == (arch.SEQ_STEPS, 3, arch.SEQ_CLASSES)  # the layout is kept, batch on axis 1
    expected = arch.run_torch(model, {"x": x[:3]})
    assert (out.argmax(-1) == expected.argmax(-1)).mean() >= 0.9


def test_a_resnet_with_batchnorm_builds_int8_and_keeps_its_top1(tmp_path):
    model = arch.trained_resnet()
    x, y = arch.image_data(256, seed=1)
    source = tmp_path / "resnet.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arch.save_pt2(model, {"x": x}, source)
    arch.save_npz(tmp_path / "validation.npz", {"x": x}, y)

    report = build(source, fast_recipe(), tmp_path / "out", tmp_path / "validation.npz")

    fidelity, accuracy = report["fidelity"], report["accuracy"]
    assert fidelity["task"] == "classification" and "labels" in fidelity["task_reason"]
    assert {c["metric"] for c in fidelity["checks"]} >= {"agreement"} and all(c["passed"] for c in fidelity["checks"])
    assert accuracy["baseline"] >= 0.9  # the model learnt the task, so a drop would show
    assert accuracy["delta"] >= -0.02 and accuracy["agreement"] >= 0.95
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    # BatchNorm folded into the convolutions (eval mode), whose weights are then stored in int8 and
    # dequantized for a float convolution (ORT's ConvInteger is far slower than its float Conv).
    assert "BatchNormalization" not in ops and "ConvInteger" not in ops, sorted(ops)
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    convs = [n for n in graph.node if n.op_type in ("Conv", "FusedConv")]
    assert len(convs) == 9 and all(n.input[1] in dequantized for n in convs)  # stem, 3 blocks x 2, 2 skips
    assert all(d.input[0] in int8 for d in graph.node if d.op_type == "DequantizeLinear")
    assert report["size_ratio"] <= 0.30  # int8 convolution weights: measured 0.21


# --- the pretrained all-MiniLM-L6-v2 -------------------------------------------------------------------


def _minilm_build(out: Path, *extra: str) -> str:
    return run_example("examples.minilm.build", out, *extra, timeout=600)


@pytest.fixture(scope="session")
def minilm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilm") / "build"
    _minilm_build(out)
    return out


def test_minilm_example_is_real_tokenized_text_and_skipped_when_up_to_date(minilm):
    from examples.minilm import build as example

    assert {*example.FILES, "MANIFEST.json"} == {p.name for p in minilm.iterdir()}
    texts = json.loads((minilm / "sentences.json").read_text())
    assert len(texts["validation"]) == example.VALIDATION and len(texts["calibration"]) == example.CALIBRATION
    assert not set(texts["validation"]) & set(texts["calibration"])  # calibrating on the validation set hides errors
    longest = 0
    for role, rows in (("validation", example.VALIDATION), ("calibration", example.CALIBRATION)):
        with np.load(minilm / f"{role}.npz") as npz:
            assert sorted(npz.files) == ["attention_mask", "input_ids"]
            ids, mask = npz["input_ids"], npz["attention_mask"]
        assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (rows, example.SEQ_LEN)
        assert (ids[:, 0] == 101).all() and ((ids == 0) == (mask == 0)).all()  # [CLS] first, [PAD] unmasked
        lengths = mask.sum(1)
        assert (ids[np.arange(rows), lengths - 1] == 102).all()  # [SEP] closes every sentence
        assert lengths.min() < example.SEQ_LEN // 2  # padding, so the mask matters
        longest = max(longest, int(lengths.max()))
        # English prose in the model's own vocabulary: hardly any [UNK].
        assert (ids == 100).sum() / lengths.sum() < 0.01
    assert longest == example.SEQ_LEN  # and a sentence or more truncated to the fixed length
    assert "up to date" in _minilm_build(minilm)


def test_minilm_wrapper_matches_sentence_transformers(minilm):
    """The .pt2 computes what sentence-transformers' own pipeline (Transformer, mean Pooling, Normalize)
    computes for the same sentences, so the pipeline is measured against what users run."""
    import torch
    from sentence_transformers import SentenceTransformer

    from examples.minilm.build import SEQ_LEN
    from examples.minilm.model import model_path

    sentences = json.loads((minilm / "sentences.json").read_text())["validation"][:48]
    with np.load(minilm / "validation.npz") as npz:
        ids, mask = npz["input_ids"][:48], npz["attention_mask"][:48]
    st = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
    st.max_seq_length = SEQ_LEN
    expected = st.encode(sentences, batch_size=16, convert_to_numpy=True)
    program = torch.export.load(str(minilm / "model.pt2")).module()
    with torch.no_grad():
        got = program(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert got.shape == expected.shape == (48, 384)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_minilm_int8_meets_the_issue_targets(minilm, tmp_path):
    from examples.minilm.model import model_path

    report = build(minilm / "model.pt2", fast_recipe(), tmp_path / "out", minilm / "validation.npz",
                   minilm / "calibration.npz")  # fmt: skip
    config = json.loads((model_path() / "config.json").read_text())
    assert report["contrib_ops"].get("QAttention") == config["num_hidden_layers"], report["contrib_ops"]
    _check_int8_embedding_table(tmp_path / "out" / "model.onnx", config["vocab_size"], config["hidden_size"])
    assert report["size_ratio"] <= MINILM_SIZE_RATIO
    _check_embedding_fidelity(report)
    assert report["sequence"]["dynamic"], report["sequence"]  # the example's .pt2 has a sequence Dim
    assert [i["shape"] for i in report["inputs"]] == [[None, None]] * 2
    with np.load(minilm / "validation.npz") as npz:
        val = {k: npz[k] for k in ("input_ids", "attention_mask")}
    _check_padding_is_masked(tmp_path / "out" / "model.onnx", val, 1000, config["vocab_size"])  # ids from 1000: words
