"""Bench-only models: a CRNN-style text recogniser (bench/optimize_bench.py's LSTM section).

CRNN (Shi et al.): a small CNN over a [batch, 1, 32, W] text-line image, its columns as a sequence,
a 2-layer bidirectional LSTM, and per-step class scores, time-major [T, batch, classes] (the layout
CTC losses take). Trained briefly on synthetic lines so its outputs are confident (random weights
give near-tie logits, where any rounding flips the argmax): every line is CHARS glyphs from a fixed
random alphabet of 12x8 bitmaps, one glyph per STEPS_PER_CHAR steps, with blanks, vertical jitter
and noise; each step is labelled with the glyph (or blank) under it.

python -m bench.models --out DIR [--force] writes (skipped when up to date with this file):
crnn_state.pt (state_dict for --factory bench.models:build_crnn), crnn.pt (traced TorchScript of
the same weights), validation.npz and calibration.npz (float32 x [n, 1, 32, W]).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import _build  # noqa: E402

CRNN_FACTORY = "bench.models:build_crnn"
CRNN_FILES = ("crnn_state.pt", "crnn.pt", "validation.npz", "calibration.npz")
HEIGHT, WIDTH = 32, 128  # a text line; the CNN downsamples the width 4x: T = 32 steps
GLYPHS = 36  # the alphabet; class 0 is the blank
CLASSES = GLYPHS + 1
STEPS_PER_CHAR = 4
CHARS = WIDTH // (4 * STEPS_PER_CHAR)  # 8 glyph cells per line
HIDDEN = 128


class CRNN(nn.Module):
    """CNN (3 conv-BN-ReLU-pool blocks, height 32 -> 4) -> [T, batch, 512] -> 2-layer BiLSTM -> Linear
    -> [T, batch, C]."""

    def __init__(self, classes: int = CLASSES, hidden: int = HIDDEN) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int]) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(pool))

        self.cnn = nn.Sequential(block(1, 32, (2, 2)), block(32, 64, (2, 2)), block(64, 128, (2, 1)))
        self.rnn = nn.LSTM(128 * 4, hidden, num_layers=2, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        f = self.cnn(x)  # [b, 128, 4, T]
        b, c, h, t = f.shape
        seq = f.reshape(b, c * h, t).permute(2, 0, 1)  # [T, b, 512]
        steps, _ = self.rnn(seq)
        return self.head(steps)


def build_crnn() -> CRNN:
    """Factory for the state_dict source (`bench.models:build_crnn`)."""
    return CRNN().eval()


def minilm_ao_dynamic() -> nn.Module:
    """The pretrained MiniLM embedder after torch.ao's one-line dynamic quantization of every nn.Linear
    (int8 weights, activations quantized per batch): what users try first
    (`bench.models:minilm_ao_dynamic`, for `optimize.benchmark --engine factory`)."""
    import warnings

    from examples.minilm.model import pretrained

    with warnings.catch_warnings():  # torch 2.13 deprecates the quantized tensor types it builds on
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(pretrained(), {nn.Linear}, dtype=torch.qint8).eval()


def alphabet(seed: int = 0) -> np.ndarray:
    """GLYPHS distinct 12x8 binary bitmaps, the same for a seed."""
    rng = np.random.default_rng(seed)
    return (rng.random((GLYPHS, 12, 8)) < 0.45).astype(np.float32)


def lines(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 [n, 1, 32, W], per-step labels int64 [n, T]): glyphs scaled 2x (24x16 px) in 16-px
    cells, a quarter of the cells blank, vertical jitter of up to 4 px, Gaussian noise."""
    rng = np.random.default_rng(seed)
    glyphs = alphabet().repeat(2, axis=1).repeat(2, axis=2)  # [G, 24, 16]
    cell = WIDTH // CHARS
    x = np.zeros((n, 1, HEIGHT, WIDTH), np.float32)
    y = np.zeros((n, WIDTH // 4), np.int64)
    for i in range(n):
        for c in range(CHARS):
            if rng.random() < 0.25:
                continue
            g = int(rng.integers(GLYPHS))
            top = int(rng.integers(0, HEIGHT - 24 + 1))
            x[i, 0, top : top + 24, c * cell : (c + 1) * cell] = glyphs[g]
            y[i, c * STEPS_PER_CHAR : (c + 1) * STEPS_PER_CHAR] = g + 1
    x += rng.normal(0, 0.2, x.shape).astype(np.float32)
    return x, y


def train(steps: int = 120, batch: int = 32) -> tuple[CRNN, float]:
    """(the trained model in eval mode, held-out per-step accuracy)."""
    _build.seed_everything(0)
    model = CRNN()
    x, y = lines(4096, seed=0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        opt.zero_grad()
        logits = model(xt[idx])  # [T, b, C]
        loss = loss_fn(logits.permute(1, 2, 0), yt[idx])
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            print(f"crnn step {step} loss {loss.item():.4f}")
    model.eval()
    xv, yv = lines(256, seed=1)
    with torch.inference_mode():
        acc = float((yv == model(torch.from_numpy(xv)).argmax(-1).numpy().T).mean())
    print(f"crnn held-out per-step accuracy {acc:.4f} (trained in {time.perf_counter() - start:.1f}s)")
    return model, acc


def write_crnn(out: Path) -> None:
    model, _ = train()
    torch.save(model.state_dict(), out / "crnn_state.pt")
    xv, _ = lines(256, seed=1)
    xc, _ = lines(128, seed=2)
    np.savez(out / "validation.npz", x=xv)
    np.savez(out / "calibration.npz", x=xc)
    with torch.no_grad():
        torch.jit.trace(model, torch.from_numpy(xv[:2])).save(str(out / "crnn.pt"))


def code_digest() -> str:
    """What the trained files depend on: the model, the data, the training and the seeding (edits
    elsewhere in this file do not retrain)."""
    import inspect

    parts = [inspect.getsource(obj) for obj in (CRNN, build_crnn, alphabet, lines, train, write_crnn)]
    parts.append(repr((HEIGHT, WIDTH, GLYPHS, STEPS_PER_CHAR, CHARS, HIDDEN)))
    blob = "".join(parts).encode() + (ROOT / "examples" / "_build.py").read_bytes()
    return hashlib.sha256(blob).hexdigest()


def ensure_crnn(out: Path, force: bool = False) -> str:
    """Train and write CRNN_FILES into `out` unless they are complete for this code; a one-line status."""
    code = code_digest()
    if not force and _build.is_complete(out, CRNN_FILES, code):
        return f"{out.name}: up to date"
    _build.publish(out, CRNN_FILES, write_crnn, code)
    return f"{out.name}: built {', '.join(CRNN_FILES)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    print(ensure_crnn(args.out, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
