"""The batcher on a real ONNX Runtime session: concatenation, isolation of bad requests, inline runs, bounds."""

from __future__ import annotations

import asyncio
import threading
import time
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


class SlowModel(RecordingModel):
    """The real model, each run held 50 ms (sleeping, as ORT's native code does, without the GIL); notes the
    most runs that were inside at once."""

    def __init__(self, model: Model):
        super().__init__(model)
        self._lock = threading.Lock()
        self.inside = self.peak = 0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        try:
            time.sleep(0.05)
            return super().run(feeds)
        finally:
            with self._lock:
                self.inside -= 1


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_compute_workers_run_that_many_batches_at_once(linear: Model, workers: int) -> None:
    model = SlowModel(linear)
    batcher = Batcher(model, Metrics(), 1, 0.0, 16, 1, workers=workers)  # type: ignore[arg-type]
    xs = [np.full((1, 16), i, dtype=np.float32) for i in range(6)]
    outs = run(batcher, lambda: asyncio.gather(*(batcher.submit({"x": x}, 1) for x in xs)))
    assert model.peak == workers
    assert len({thread for _, thread in model.calls}) == workers
    _, w, b = models.linear_model()
    for x, out in zip(xs, outs, strict=True):  # every request still gets its own rows back
        np.testing.assert_allclose(out["y"], x @ w + b, rtol=1e-5)


def test_with_every_worker_busy_requests_queue_into_the_next_batches(linear: Model) -> None:
    """Two workers, batches of up to 8: while both run, later requests queue; a worker set free takes its
    share of them (half of the 8), leaving the rest for the other one."""
    model = SlowModel(linear)
    batcher = Batcher(model, Metrics(), 8, 0.0, 64, 1, workers=2)  # type: ignore[arg-type]
    x = np.ones((1, 16), dtype=np.float32)

    async def scenario() -> None:
        first = []
        for _ in range(2):
            first.append(asyncio.ensure_future(batcher.submit({"x": x}, 1)))
            await asyncio.sleep(0.01)  # a worker takes it alone and runs it
        later = [asyncio.ensure_future(batcher.submit({"x": x}, 1)) for _ in range(8)]
        await asyncio.gather(*first, *later)

    run(batcher, scenario)
    rows = [r for r, _ in model.calls]
    assert rows[:3] == [1, 1, 4] and sum(rows) == 10 and len(rows) < 10


@pytest.mark.parametrize(("workers", "waits"), [(1, True), (2, False)])
def test_the_queue_delay_holds_a_batch_only_while_no_other_worker_is_free(
    linear: Model, workers: int, waits: bool
) -> None:
    """One worker waits out the delay for company; with a second one free, waiting would only idle it."""
    batcher = Batcher(linear, Metrics(), 8, 0.3, 16, 1, workers=workers)
    x = np.ones((1, 16), dtype=np.float32)

    async def one_request() -> float:
        start = time.perf_counter()
        await batcher.submit({"x": x}, 1)
        return time.perf_counter() - start

    seconds = run(batcher, one_request)
    assert (seconds >= 0.3) if waits else (seconds < 0.15)
