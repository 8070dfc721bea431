"""Train the digits CNN (seconds on 2 cores) and save it as TorchScript with its
held-out validation split and a calibration split.

python -m examples.digits.train --out examples/digits/build [--force]
writes model.pt (TorchScript), model_state.pt (state_dict for
--factory examples.digits.model:build), validation.npz, calibration.npz and
training.npz (the training split's inputs: rows to fine-tune a compressed model on).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from examples import _build

FILES = ("model.pt", "model_state.pt", "validation.npz", "calibration.npz", "training.npz")


def dataset() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    return x, d.target.astype(np.int64)


def write(out: Path) -> None:
    import torch
    from torch import nn

    from examples.digits.model import DigitsCNN

    # One thread: small enough to train in seconds, and the weights then do not
    # depend on the core count (nor stall on busy-waiting threads on a shared box).
    _build.seed_everything(0, threads=1)
    x, y = dataset()
    order = np.random.default_rng(0).permutation(len(x))
    n_val, n_cal = int(0.25 * len(x)), 256
    val, cal, train = order[:n_val], order[n_val : n_val + n_cal], order[n_val + n_cal :]
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(15):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        acc = (model(torch.from_numpy(x[val])).argmax(1).numpy() == y[val]).mean()
    print(f"digits CNN held-out top-1: {acc:.4f}")
    traced = torch.jit.trace(model, torch.from_numpy(x[val[:2]]))
    traced.save(str(out / "model.pt"))
    torch.save(model.state_dict(), out / "model_state.pt")
    np.savez(out / "validation.npz", x=x[val], y=y[val])
    np.savez(out / "calibration.npz", x=x[cal], y=y[cal])
    np.savez(out / "training.npz", x=x[train])


if __name__ == "__main__":
    sys.exit(_build.main(__doc__ or "", "digits", FILES, write))
