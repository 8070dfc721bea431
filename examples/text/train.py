"""Train the text encoder on a synthetic but learnable task (under a minute on
2 cores) and save it as TorchScript and as a torch.export program.

Task: 64 tokens of random filler; the class (0-3) is the keyword token that is
planted most often (6 times, against at most 4 copies of each distractor), so
the label has a clear margin and the model can be confident.

python -m examples.text.train --out examples/text/build [--force] writes
model.pt (traced TorchScript), model.pt2 (torch.export, dynamic batch),
model_state.pt (state_dict for --factory examples.text.model:build),
validation.npz and calibration.npz (x int64 token ids, y int64), training.npz (the training
set's token ids: rows to fine-tune or distill a compressed model on).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from examples import _build

FILES = ("model.pt", "model.pt2", "model_state.pt", "validation.npz", "calibration.npz", "training.npz")
KEYWORDS = 4  # tokens 0..3 are the class keywords; the rest is filler
PLANTED = 6
MAX_DISTRACT = 4


def make_data(n: int, seed: int, seq_len: int = 64, vocab: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(KEYWORDS, vocab, size=(n, seq_len))
    y = rng.integers(0, KEYWORDS, size=n)
    for i in range(n):
        pos = rng.permutation(seq_len)
        x[i, pos[:PLANTED]] = y[i]
        at = PLANTED
        for other in range(KEYWORDS):
            if other == y[i]:
                continue
            k = int(rng.integers(0, MAX_DISTRACT + 1))
            x[i, pos[at : at + k]] = other
            at += k
    return x.astype(np.int64), y.astype(np.int64)


def write(out: Path) -> None:
    import torch
    from torch import nn

    from examples.text.model import TextEncoder

    _build.seed_everything(0)
    model = TextEncoder()
    x, y = make_data(4096, seed=0)
    xv, yv = make_data(1024, seed=1)
    xc, yc = make_data(256, seed=2)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    steps, batch = 50, 32
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        opt.zero_grad()
        loss = loss_fn(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f}")
    model.eval()
    with torch.inference_mode():
        acc = (model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean()
    print(f"text encoder held-out top-1: {acc:.4f} (trained in {time.perf_counter() - start:.1f}s)")
    example = torch.from_numpy(xv[:2])
    torch.jit.trace(model, example).save(str(out / "model.pt"))
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch_dim},))
    torch.export.save(program, str(out / "model.pt2"))
    torch.save(model.state_dict(), out / "model_state.pt")
    np.savez(out / "validation.npz", x=xv, y=yv)
    np.savez(out / "calibration.npz", x=xc, y=yc)
    np.savez(out / "training.npz", x=x)


if __name__ == "__main__":
    sys.exit(_build.main(__doc__ or "", "text", FILES, write))
