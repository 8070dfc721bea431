"""Dynamic batching with Triton's semantics.

Requests queue (bounded: a full queue raises QueueFull -> 503 + Retry-After). One batch forms at a time: it
takes the oldest request and, while the batch has room, adds queued requests whose non-batch shapes match,
waiting at most ``max_queue_delay`` from the oldest request's arrival for more. The rows are concatenated
along dimension 0, run once on a compute thread, and split back. Whatever queues while the model is busy
joins the next batch, so batching pays off under load even with a zero delay.

``workers`` batches may run at once, each on its own thread over the one session (Triton's instance count):
on CPU, single-threaded runs side by side serve more rows than one run spread over every core
(docs/benchmarks.md). With several workers a batch takes its share of what waits (the rows over the
workers), so a worker set free finds some, and it waits for more only while every other worker is busy.

Models whose runs average under ``inline_compute_s`` run on the event-loop thread instead: the hand-off to
a thread and back costs more than the run itself, and a blocked loop for a fraction of a millisecond is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from serving.errors import BadRequest, QueueFull, ServingError, Unavailable
from serving.metrics import Metrics
from serving.model import Model

log = logging.getLogger("serving")

Outputs = dict[str, np.ndarray]


@dataclass
class Job:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future[Outputs]
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        # Requests can share a batch only when everything but the batch dimension agrees.
        return tuple((name, a.shape[1:]) for name, a in self.feeds.items())


def _ort_error(e: Exception) -> ServingError:
    # ORT reports bad tensor values (e.g. an index out of range) as InvalidArgument: the client's fault.
    if type(e).__name__ in ("InvalidArgument", "InvalidGraph"):
        return BadRequest(f"the model rejected the input: {str(e)[:500]}")
    log.error("inference failed: %s", e)
    return ServingError("inference failed", 500)


class Batcher:
    def __init__(
        self,
        model: Model,
        metrics: Metrics,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        retry_after_s: int,
        inline_compute_s: float = 0.0,
        workers: int = 1,
    ):
        self.model = model
        self.metrics = metrics
        self.max_batch_size = max_batch_size if model.batchable else 1
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.retry_after_s = retry_after_s
        self.queue: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._forming = asyncio.Lock()  # one batch forms at a time; the others wait for theirs
        self._closed = False
        self._running = 0  # batches being formed or run
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="ort-run")
        self.inline_compute_s = inline_compute_s
        self.compute_ewma_s = float("inf")  # unknown until measured: hand off
        label = model.name
        metrics.queue_capacity.labels(label).set(max_queue_size)
        # Bound children: labels() on every request costs microseconds we do not have.
        self._queue_depth = metrics.queue_depth.labels(label)
        self._queue_duration = metrics.queue_duration.labels(label)
        self._compute_duration = metrics.compute_duration.labels(label)
        self._batch_size = metrics.batch_size.labels(label)

    @property
    def healthy(self) -> bool:
        """False once a worker task has died (it never should: every batch error is caught)."""
        return self._closed or not any(task.done() for task in self._tasks)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(), name=f"batcher-{i}") for i in range(self.workers)]

    async def close(self) -> None:
        """Finish everything queued, then stop."""
        self._closed = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks)
        self._executor.shutdown(wait=True)

    async def submit(self, feeds: dict[str, np.ndarray], rows: int) -> Outputs:
        if self._closed:
            raise Unavailable("the server is shutting down")
        if len(self.queue) >= self.max_queue_size:
            raise QueueFull(f"the request queue is full ({self.max_queue_size} waiting)", self.retry_after_s)
        if not self.queue and not self._running and self.compute_ewma_s < self.inline_compute_s:
            # Idle and cheap: run right here, skipping the queue and two task switches. Nothing else runs on
            # the loop meanwhile, so no other request can slip in between.
            self._queue_duration.observe(0.0)
            result = self._compute_one(feeds, rows)
            if isinstance(result, ServingError):
                raise result
            return result
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self.queue.append(Job(feeds, rows, future))
        self._queue_depth.set(len(self.queue))
        self._wakeup.set()
        return await future

    async def _loop(self) -> None:
        while True:
            async with self._forming:
                while not self.queue:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                self._running += 1  # forming or running: new requests must queue, not run inline
                jobs = await self._collect()
                self._queue_depth.set(len(self.queue))
            try:
                if jobs:
                    await self._execute(jobs)
            finally:
                self._running -= 1
                self._wakeup.set()  # a batch waiting to fill while every worker was busy may now run

    def _limit(self, rows: int) -> int:
        """Rows a batch that holds ``rows`` may grow to. One worker takes all it can. Several take a share
        of what waits (the batch's rows and the queue's, over the workers), so a worker about to be free
        finds some: on CPU, runs side by side serve more rows than one bigger batch."""
        if self.workers == 1:
            return self.max_batch_size
        waiting = rows + sum(job.rows for job in self.queue)
        return min(self.max_batch_size, max(rows, math.ceil(waiting / self.workers)))

    def _take(self, jobs: list[Job], rows: int) -> int:
        key, keep, limit = jobs[0].key, deque[Job](), self._limit(rows)
        while self.queue:
            job = self.queue.popleft()
            if job.future.done():  # caller went away
                continue
            if rows + job.rows <= limit and job.key == key:
                jobs.append(job)
                rows += job.rows
            else:
                keep.append(job)
        self.queue = keep
        return rows

    async def _collect(self) -> list[Job]:
        head = self.queue.popleft()
        if head.future.done():
            return []
        jobs = [head]
        if self.max_batch_size <= 1 or head.rows >= self.max_batch_size:
            return jobs
        deadline = head.enqueued + self.max_queue_delay_s
        rows = self._take(jobs, head.rows)
        # Wait for more only while every other worker is busy: a free one would run them at once.
        while rows < self._limit(rows) and not self._closed and self._running >= self.workers:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            rows = self._take(jobs, rows)
        return jobs

    async def _execute(self, jobs: list[Job]) -> None:
        start = time.perf_counter()
        for job in jobs:
            self._queue_duration.observe(start - job.enqueued)
        try:
            if self.compute_ewma_s < self.inline_compute_s:
                results = self._compute(jobs)
            else:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self._compute, jobs)
        except Exception as e:  # never let the worker die: fail this batch, keep serving
            log.exception("batch failed")
            results = [ServingError(f"inference failed: {type(e).__name__}", 500)] * len(jobs)
        for job, result in zip(jobs, results, strict=True):
            if job.future.done():
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _run(self, feeds: dict[str, np.ndarray], rows: int) -> Outputs:
        t0 = time.perf_counter()
        out = self.model.run(feeds)
        seconds = time.perf_counter() - t0
        self._compute_duration.observe(seconds)
        ewma = self.compute_ewma_s
        self.compute_ewma_s = seconds if ewma == float("inf") else 0.9 * ewma + 0.1 * seconds
        self._batch_size.observe(rows)
        return out

    def _compute_one(self, feeds: dict[str, np.ndarray], rows: int) -> Outputs | ServingError:
        try:
            return self._run(feeds, rows)
        except Exception as e:
            return _ort_error(e)

    def _compute(self, jobs: list[Job]) -> list[Outputs | ServingError]:
        """Runs on a compute thread (or inline for cheap models)."""
        if len(jobs) == 1:
            return [self._compute_one(jobs[0].feeds, jobs[0].rows)]
        feeds = {name: np.concatenate([j.feeds[name] for j in jobs]) for name in jobs[0].feeds}
        try:
            out = self._run(feeds, sum(j.rows for j in jobs))
        except Exception:
            # One request's values broke the batch: run each alone so only that one fails.
            return self._compute_each(jobs)
        bounds = np.cumsum([j.rows for j in jobs])[:-1]
        split = {name: np.split(arr, bounds) for name, arr in out.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(jobs))]

    def _compute_each(self, jobs: list[Job]) -> list[Outputs | ServingError]:
        results: list[Outputs | ServingError] = []
        for job in jobs:
            results.extend(self._compute([job]))
        return results
