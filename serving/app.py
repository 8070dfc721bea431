"""The Starlette app: routes, body limits, readiness and the lifespan that loads the model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving import __version__, protocol
from serving.batching import Batcher
from serving.errors import (
    BadRequest,
    InjectedFault,
    ModelNotFound,
    PayloadTooLarge,
    ServingError,
    Unavailable,
    error_response,
    handle_exception,
    json_response,
)
from serving.metrics import CONTENT_TYPE, UNKNOWN_MODEL, Metrics
from serving.model import Model
from serving.openapi import document
from serving.settings import Settings
from serving.timeouts import BodyDeadlines

log = logging.getLogger("serving")
OFFLOAD_BYTES = 1 << 20  # bodies from this size are decoded on a worker thread


class ServerState:
    """What the routes share. ``ready`` is true only between warm-up and the first SIGTERM."""

    def __init__(self, settings: Settings, model: Model | None):
        self.settings = settings
        self.model = model
        self.batcher: Batcher | None = None
        self.metrics = Metrics()
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


async def read_body(request: Request, limit: int, deadlines: BodyDeadlines) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (never buffered beyond it),
    and with 408 when it takes too long to arrive (a stalled client holds no task forever)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("invalid Content-Length header")
        if int(length) > limit:
            raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    # Straight from ASGI receive(): Request.stream()'s async generator costs more than the loop.
    chunks, total, receive = [], 0, request.receive
    task = deadlines.begin()
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        timeout = deadlines.timed_out(task)
        if timeout is None:
            raise
        raise timeout from None
    finally:
        deadlines.end(task)
    return b"".join(chunks)


class CloseWhileDraining:
    """After SIGTERM every response says `Connection: close`, so keep-alive clients reconnect, and a new
    connection goes where the load balancer sends it now (kube-proxy keeps an established connection on
    its old pod): none is left idle on a server about to close it under a request in flight. Pure ASGI,
    checked once per request: nothing is wrapped while the server is not draining."""

    def __init__(self, app: Callable[..., Awaitable[None]], state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http" or not self.state.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def create_app(settings: Settings, model: Model | None = None) -> Starlette:
    """Build the app. Without ``model`` the lifespan loads (and verifies) it from ``settings.model_dir``."""
    state = ServerState(settings, model)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state.model is None:
            state.model = await asyncio.to_thread(Model, settings)
        m = state.model
        seconds = await asyncio.to_thread(m.warmup, settings.warmup_runs, settings.max_batch_size)
        log.info(
            "model %r digest %s providers %s threads %d batchable %s warmed up in %.3fs",
            m.name, m.digest[:12], m.providers, m.intra_op_threads, m.batchable, seconds,
        )  # fmt: skip
        state.metrics.model_info.labels(m.name, m.digest, ",".join(m.providers), __version__).set(1)
        state.metrics.start_series(m.name)
        state.batcher = Batcher(
            m,
            state.metrics,
            settings.max_batch_size,
            settings.max_queue_delay_ms / 1000.0,
            settings.max_queue_size,
            settings.retry_after_s,
            settings.inline_compute_ms / 1000.0,
        )
        state.batcher.start()
        state.deadlines.start()
        state.set_ready(not state.draining)  # a SIGTERM during warm-up keeps us unready
        try:
            yield
        finally:
            state.set_ready(False)
            await state.deadlines.stop()
            await state.batcher.close()

    def model_label(name: str) -> str:
        return name if state.model is not None and name == state.model.name else UNKNOWN_MODEL

    def inference(
        endpoint: str, handle: Callable[[Request], Awaitable[Response]], name_of: Callable[[Request], str]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap an inference route with its metrics; errors become {"error": ...} responses."""
        metrics = state.metrics
        # labels() costs microseconds per call: keep the bound children (a handful: low cardinality).
        children: dict[tuple[str, int], tuple[Any, Any]] = {}
        inflight_children: dict[str, Any] = {}
        fault_ratio = settings.fault_error_ratio

        async def route(request: Request) -> Response:
            label = model_label(name_of(request))
            start = time.perf_counter()
            inflight = inflight_children.get(label)
            if inflight is None:
                inflight = inflight_children[label] = metrics.inflight.labels(label)
            inflight.inc()
            try:
                if fault_ratio and random.random() < fault_ratio:  # tests only: no need for a secure random
                    raise InjectedFault(f"injected fault (fault_error_ratio={fault_ratio}); a setting for tests only")
                response = await handle(request)
            except ServingError as e:
                response = error_response(e)
            except Exception as e:
                response = await handle_exception(request, e)
            finally:
                inflight.dec()
            key = (label, response.status_code)
            pair = children.get(key)
            if pair is None:
                pair = children[key] = (
                    metrics.requests.labels(label, endpoint, str(response.status_code)),
                    metrics.request_duration.labels(label, endpoint),
                )
            pair[0].inc()
            pair[1].observe(time.perf_counter() - start)
            return response

        return route

    async def decode(
        request: Request, decoder: Callable[..., protocol.InferRequest], m: Model
    ) -> protocol.InferRequest:
        body = await read_body(request, settings.max_body_bytes, state.deadlines)
        args = (m, settings.max_elements, settings.allow_nonfinite)
        if len(body) < OFFLOAD_BYTES:
            return decoder(protocol.parse_json(body), *args)
        # Parsing megabytes of JSON takes milliseconds: keep the loop (health probes, other requests) moving.
        return await asyncio.to_thread(lambda: decoder(protocol.parse_json(body), *args))

    async def infer(request: Request) -> Response:
        m, batcher = state.require(request.path_params["model_name"])
        req = await decode(request, protocol.decode_infer, m)
        outputs = await batcher.submit(req.feeds, req.rows)
        return json_response(protocol.encode_infer(m, req, outputs))

    async def predict(request: Request) -> Response:
        name = request.path_params.get("model_name")
        m, batcher = state.require(name if name is not None else state.model.name if state.model else "")
        req = await decode(request, protocol.decode_predict, m)
        outputs = await batcher.submit(req.feeds, req.rows)
        return json_response(protocol.encode_predict(m, outputs))

    async def live(request: Request) -> Response:
        if state.batcher is not None and not state.batcher.healthy:  # the batch worker died: restart us
            return json_response({"live": False}, 503)
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        return json_response({"live": True, "ready": state.ready}, 200 if state.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "modelstack-serving", "version": __version__, "extensions": []})

    async def model_metadata(request: Request) -> Response:
        m, _ = state.require(request.path_params["model_name"])
        return json_response(m.metadata())

    async def model_ready(request: Request) -> Response:
        m, _ = state.require(request.path_params["model_name"])
        return json_response({"name": m.name, "ready": state.ready}, 200 if state.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(request: Request) -> Response:
        m = state.model
        doc = document(m.name, [s.name for s in m.inputs]) if m is not None else document()
        return json_response(doc)

    def path_name(request: Request) -> str:
        return str(request.path_params.get("model_name", ""))

    def default_name(request: Request) -> str:
        return state.model.name if state.model is not None else ""

    routes = [  # hot routes first: Starlette tries them in order
        Route("/v2/models/{model_name}/infer", inference("infer", infer, path_name), methods=["POST"]),
        Route("/predict", inference("predict", predict, default_name), methods=["POST"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{model_name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model_name}/ready", model_ready, methods=["GET"]),
        Route("/v1/models/{model_name}:predict", inference("predict", predict, path_name), methods=["POST"]),
        Route("/v2/openapi.json", openapi, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    handlers = {HTTPException: handle_exception, ServingError: handle_exception, Exception: handle_exception}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,
                    middleware=[Middleware(CloseWhileDraining, state=state)])
    app.state.serving = state
    return app
