"""Request-body deadlines without a timer per request.

``asyncio.timeout`` around every body read costs several microseconds per request (a timer armed and
cancelled); one sweep task that cancels the few reads past their deadline costs a dict insert and pop.
"""

from __future__ import annotations

import asyncio
import time

from serving.errors import RequestTimeout


class BodyDeadlines:
    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._started: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep(), name="body-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweep(self) -> None:
        period = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            late = time.monotonic() - self.timeout_s
            for task, started in list(self._started.items()):
                if started < late:
                    del self._started[task]
                    self._expired.add(task)
                    task.cancel()

    def begin(self) -> asyncio.Task[object] | None:
        task = asyncio.current_task()
        if task is not None:
            self._started[task] = time.monotonic()
        return task

    def end(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._started.pop(task, None)

    def timed_out(self, task: asyncio.Task[object] | None) -> RequestTimeout | None:
        """After a CancelledError: the 408 to raise if the cancel was ours, else None (re-raise it)."""
        if task is None or task not in self._expired:
            return None
        self._expired.discard(task)
        task.uncancel()
        return RequestTimeout(f"request body not received within {self.timeout_s:g} s")
