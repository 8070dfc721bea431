"""Tiny real models and data for the optimize tests (trained in well under a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

FEATURES, CLASSES = 16, 4


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 4 * 4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(FEATURES, CLASSES)
        self.b = nn.Linear(8, CLASSES)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.a(left) + self.b(right)


def build_mlp() -> MLP:
    """Factory for state_dict sources."""
    return MLP()


def mlp_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A separable task: the label is the argmax of a fixed projection."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(123).standard_normal((FEATURES, CLASSES))
    x = rng.standard_normal((n, FEATURES)).astype(np.float32)
    return x, (x @ w).argmax(1).astype(np.int64)


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int) -> nn.Module:
    """Full-batch Adam on cross-entropy; the caller seeds torch before building the model."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


def trained_mlp() -> MLP:
    torch.manual_seed(0)
    model = MLP()
    x, y = mlp_data(2048, seed=0)
    return _fit(model, x, y, steps=150)


def cnn_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The label is the quadrant with the brightest blob."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, CLASSES, n)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, r * 4 : r * 4 + 4, col * 4 : col * 4 + 4] += 0.7
    return x, y.astype(np.int64)


def trained_cnn() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = cnn_data(1024, seed=0)
    return _fit(model, x, y, steps=60)


def save_all_formats(model: nn.Module, example: torch.Tensor, out: Path) -> dict[str, Path]:
    """TorchScript, torch.export (.pt2, dynamic batch), state_dict and ONNX files of one model."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "torchscript": out / "model.pt",
        "exported_program": out / "model.pt2",
        "state_dict": out / "state.pt",
        "onnx": out / "model.onnx",
    }
    torch.jit.trace(model, example).save(str(paths["torchscript"]))
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(
        torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(paths["exported_program"])
    )
    torch.save(model.state_dict(), paths["state_dict"])
    torch.onnx.export(
        model, (example,), str(paths["onnx"]), dynamo=False, input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    return paths


def build_tiny_encoder() -> nn.Module:
    """Factory: the text example's BERT-style encoder, shrunk (2 layers, width 64, 16 tokens)."""
    from examples.text.model import Config, TextEncoder

    torch.manual_seed(0)
    return TextEncoder(Config(vocab=32, seq_len=16, hidden=64, heads=2, ffn=128, layers=2, classes=CLASSES))


def build_deep_encoder() -> nn.Module:
    """Factory: the text example's encoder with 4 blocks of width 64 over 16 tokens (a distillation teacher)."""
    from examples.text.model import Config, TextEncoder

    return TextEncoder(Config(vocab=32, seq_len=16, hidden=64, heads=2, ffn=128, layers=4, classes=CLASSES))


def trained_deep_encoder() -> nn.Module:
    """build_deep_encoder trained on the text example's keyword task (16 tokens) for a few seconds."""
    from examples.text.train import make_data

    torch.manual_seed(0)
    x, y = make_data(512, seed=0, seq_len=16)
    model = build_deep_encoder()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for step in range(120):
        idx = torch.arange(step * 32, step * 32 + 32) % len(xt)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    return model.eval()


def small_student() -> nn.Module:
    """A distillation student for the MLP: one hidden layer of 16."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def student_with_other_outputs() -> nn.Module:
    """A student whose outputs do not match the MLP's (3 classes instead of 4)."""
    return nn.Sequential(nn.Linear(FEATURES, 3))


def student_with_other_inputs() -> nn.Module:
    """A student that takes 8 features instead of the MLP's 16."""
    return nn.Sequential(nn.Linear(8, CLASSES))


SEQ_FEATURES, SEQ_STEPS, SEQ_CLASSES = 8, 12, 6


class TimeMajorTagger(nn.Module):
    """A CRNN-style recogniser's head: 2-layer BiLSTM over [batch, T, F], output time-major [T, batch, C]
    (the layout CTC losses want)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(SEQ_FEATURES, 16, num_layers=2, bidirectional=True)
        self.head = nn.Linear(32, SEQ_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, _ = self.rnn(x.transpose(0, 1))
        return self.head(steps)


def build_time_major_tagger() -> TimeMajorTagger:
    torch.manual_seed(3)
    return TimeMajorTagger().eval()


class ThreeHeads(nn.Module):
    """One trunk, three outputs of different layouts and tasks, returned as a dict (the dynamo exporter
    keeps the order): class scores [batch, C], time-major per-step scores [T, batch, C] and one
    regression value per row [batch, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU())
        self.classes = nn.Linear(64, CLASSES)
        self.steps = nn.Linear(64, SEQ_STEPS * SEQ_CLASSES)
        self.value = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        steps = self.steps(h).reshape(-1, SEQ_STEPS, SEQ_CLASSES).transpose(0, 1)
        return {"logits": self.classes(h), "steps": steps, "value": self.value(h)}


def build_three_heads() -> ThreeHeads:
    torch.manual_seed(5)
    return ThreeHeads().eval()


class AsTuple(nn.Module):
    """A dict-returning model's values as a tuple (what the TorchScript exporter can take)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x).values())


TOKENS, TOKEN_STEPS = 32, 12


class FlatTokens(nn.Module):
    """Token ids and a padding mask in, one linear layer over the flattened [steps x width] embeddings:
    it takes one sequence length only (the Linear's input size fixes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(TOKENS, 8)
        self.head = nn.Linear(TOKEN_STEPS * 8, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.head(h.flatten(1))


def build_flat_tokens() -> FlatTokens:
    torch.manual_seed(2)
    return FlatTokens().eval()


def token_batch(n: int, seed: int) -> dict[str, np.ndarray]:
    """Right-padded ids and their mask, rows of 2 to TOKEN_STEPS tokens."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, TOKEN_STEPS), np.int64)
    mask = np.zeros((n, TOKEN_STEPS), np.int64)
    for i, length in enumerate(rng.integers(2, TOKEN_STEPS + 1, n)):
        ids[i, :length] = rng.integers(1, TOKENS, length)
        mask[i, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}
