"""The batcher on a real ONNX Runtime session: concatenation, isolation of bad requests, inline runs, bounds."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.batching import Batcher
from serving.errors import BadRequest, QueueFull
from serving.metrics import Metrics
from serving.model import Model
from serving.settings import Settings
from tests.serving import models


class RecordingModel:
    """The real model, noting the rows and thread of every session.run."""

    def __init__(self, model: Model):
        self.model = model
        self.calls: list[tuple[int, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append((len(next(iter(feeds.values()))), threading.current_thread().name))
        return self.model.run(feeds)


@pytest.fixture(scope="module")
def linear(model_root: Path) -> Model:
    return Model(Settings(model_dir=model_root / "linear"))


def run(batcher: Batcher, coro_fn: Any) -> Any:
    async def scenario() -> Any:
        batcher.start()
        try:
            return await coro_fn()
        finally:
            await batcher.close()

    return asyncio.run(scenario())


def test_concurrent_requests_share_one_run_and_get_their_own_rows(linear: Model) -> None:
    model = RecordingModel(linear)
    batcher = Batcher(model, Metrics(), 8, 0.2, 16, 1)  # type: ignore[arg-type]
    xs = [np.full((1 + i % 2, 16), i, dtype=np.float32) for i in range(5)]  # 1 or 2 rows each: 7 rows
    outs = run(batcher, lambda: asyncio.gather(*(batcher.submit({"x": x}, len(x)) for x in xs)))
    assert [rows for rows, _ in model.calls] == [7]
    _, w, b = models.linear_model()
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out["y"], x @ w + b, rtol=1e-5)


def test_batches_respect_max_batch_size(linear: Model) -> None:
    model = RecordingModel(linear)
    batcher = Batcher(model, Metrics(), 4, 0.05, 16, 1)  # type: ignore[arg-type]
    xs = [np.ones((1, 16), dtype=np.float32)] * 10
    run(batcher, lambda: asyncio.gather(*(batcher.submit({"x": x}, 1) for x in xs)))
    assert sum(r for r, _ in model.calls) == 10 and max(r for r, _ in model.calls) <= 4


def test_cheap_models_run_inline_when_idle(linear: Model) -> None:
    model = RecordingModel(linear)
    batcher = Batcher(model, Metrics(), 8, 0.0, 16, 1, inline_compute_s=1.0)  # type: ignore[arg-type]
    x = np.ones((1, 16), dtype=np.float32)

    async def sequential() -> None:
        for _ in range(4):
            await batcher.submit({"x": x}, 1)

    run(batcher, sequential)
    threads = [t for _, t in model.calls]
    assert threads[0].startswith("ort-run")  # unknown cost at first: hand off
    assert all(t == "MainThread" for t in threads[1:])  # then measured cheap: inline


def test_full_queue_refuses_with_retry_after(linear: Model) -> None:
    batcher = Batcher(linear, Metrics(), 1, 0.0, 2, 7)
    x = np.ones((1, 16), dtype=np.float32)

    async def flood() -> list[Any]:
        return await asyncio.gather(*(batcher.submit({"x": x}, 1) for _ in range(6)), return_exceptions=True)

    results = run(batcher, flood)
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert len(refused) == 4 and refused[0].headers == {"Retry-After": "7"} and refused[0].status_code == 503


def test_batch_isolates_a_bad_request(model_root: Path) -> None:
    """A request whose values make ORT fail inside a batch fails alone; its batch-mates still succeed."""
    model = Model(Settings(model_dir=model_root / "multi"))

    def feeds(ids: list[int]) -> dict[str, np.ndarray]:
        return {
            "ids": np.array([ids], dtype=np.int64),
            "mask": np.zeros((1, 3), dtype=bool),
            "half": np.zeros((1, 2), dtype=np.float16),
        }

    batcher = Batcher(model, Metrics(), 8, 0.05, 16, 1)
    good, bad = run(
        batcher,
        lambda: asyncio.gather(
            batcher.submit(feeds([1, 2, 3]), 1), batcher.submit(feeds([1, 2, 99]), 1), return_exceptions=True
        ),
    )
    assert isinstance(bad, BadRequest)
    assert isinstance(good, dict) and good["emb"].shape == (1, 3, 2)
