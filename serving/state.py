"""What the REST routes and the gRPC service share: the model, its batcher, metrics and readiness."""

from __future__ import annotations

import random

from serving.batching import Batcher
from serving.errors import InjectedFault, ModelNotFound, Unavailable
from serving.metrics import UNKNOWN_MODEL, Metrics, RequestSeries
from serving.model import Model
from serving.settings import Settings
from serving.timeouts import BodyDeadlines


class ServerState:
    """``ready`` is true only between warm-up and the first SIGTERM."""

    def __init__(self, settings: Settings, model: Model | None):
        self.settings = settings
        self.model = model
        self.batcher: Batcher | None = None
        self.metrics = Metrics()
        self.series = RequestSeries(self.metrics)
        self.deadlines = BodyDeadlines(settings.body_timeout_s)
        self.ready = False
        self.draining = False

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        if self.model is not None:
            self.metrics.ready.labels(self.model.name).set(1 if ready else 0)

    def begin_drain(self) -> None:
        """SIGTERM: stop advertising readiness at once; requests keep being served until the server closes."""
        self.draining = True
        self.set_ready(False)

    def require(self, name: str) -> tuple[Model, Batcher]:
        if self.model is None or self.batcher is None:
            raise Unavailable("the model is not loaded yet")
        if name != self.model.name:
            raise ModelNotFound(f"unknown model {name[:200]!r}; this server serves {self.model.name!r}")
        return self.model, self.batcher

    def model_label(self, name: str) -> str:
        """The metrics label for a requested model name: any name but the served one is one label."""
        return name if self.model is not None and name == self.model.name else UNKNOWN_MODEL

    def maybe_inject_fault(self) -> None:
        ratio = self.settings.fault_error_ratio
        if ratio and random.random() < ratio:  # tests only: no need for a secure random
            raise InjectedFault(f"injected fault (fault_error_ratio={ratio}); a setting for tests only")
