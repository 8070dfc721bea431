"""The Starlette app: routes, body limits, readiness and the lifespan that loads the model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
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
    PayloadTooLarge,
    ServingError,
    error_response,
    handle_exception,
    json_response,
)
from serving.grpc_service import EXTENSIONS, GrpcServer
from serving.metrics import CONTENT_TYPE
from serving.model import Model
from serving.openapi import document
from serving.settings import Settings
from serving.state import ServerState
from serving.timeouts import BodyDeadlines

log = logging.getLogger("serving")
OFFLOAD_BYTES = 1 << 20  # bodies from this size are decoded on a worker thread
BINARY_HEADER = "Inference-Header-Content-Length"  # the binary tensor data extension's


def binary_header_length(value: str, body_size: int) -> int:
    """The JSON part's size a binary-extension request declares, checked against the body."""
    if not value.isdigit():
        raise BadRequest(f"{BINARY_HEADER} must be a byte count, got {value[:40]!r}")
    size = int(value)
    if size > body_size:
        raise BadRequest(f"{BINARY_HEADER} {size} is past the end of the {body_size}-byte body")
    return size


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


class InferFastPath:
    """``POST /v2/models/{name}/infer``, the route every inference takes, served without Starlette's router
    and exception middleware (tens of microseconds a request: a fifth of what the whole server adds on a
    small model); ``route`` turns every error into its JSON response itself. Anything else goes on to
    Starlette. Pure ASGI, inside CloseWhileDraining."""

    PREFIX, SUFFIX = "/v2/models/", "/infer"

    def __init__(self, app: Callable[..., Awaitable[None]], route: Callable[[Request], Awaitable[Response]]):
        self.app, self.route = app, route

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "POST" and path.startswith(self.PREFIX):
            name = path[len(self.PREFIX) : -len(self.SUFFIX)] if path.endswith(self.SUFFIX) else ""
            if name and "/" not in name:
                scope["path_params"] = {"model_name": name}
                response = await self.route(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, model: Model | None = None) -> Starlette:
    """Build the app. Without ``model`` the lifespan loads (and verifies) it from ``settings.model_dir``."""
    state = ServerState(settings, model)

    grpc_server = GrpcServer(state) if settings.grpc_port is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state.model is None:
            state.model = await asyncio.to_thread(Model, settings)
        m = state.model
        seconds = await asyncio.to_thread(m.warmup, settings.warmup_runs, settings.max_batch_size)
        log.info(
            "model %r digest %s providers %s workers %d x threads %d batchable %s warmed up in %.3fs",
            m.name, m.digest[:12], m.providers, m.threads.workers, m.threads.intra_op, m.batchable, seconds,
        )  # fmt: skip
        state.metrics.model_info.labels(m.name, m.digest, ",".join(m.providers), __version__).set(1)
        state.metrics.start_series(m.name, ("infer", "predict", "grpc") if grpc_server else ("infer", "predict"))
        state.batcher = Batcher(
            m,
            state.metrics,
            settings.max_batch_size,
            settings.max_queue_delay_ms / 1000.0,
            settings.max_queue_size,
            settings.retry_after_s,
            settings.inline_compute_ms / 1000.0,
            m.threads.workers,
        )
        state.batcher.start()
        state.deadlines.start()
        if grpc_server is not None:  # same event loop, batcher, metrics and limits as the REST routes
            await grpc_server.start(settings.host, settings.grpc_port or 0)
            app.state.grpc_port = grpc_server.port
        state.set_ready(not state.draining)  # a SIGTERM during warm-up keeps us unready
        try:
            yield
        finally:
            state.set_ready(False)
            if grpc_server is not None:  # in-flight calls finish within the graceful timeout
                await grpc_server.stop(settings.graceful_timeout_s)
            await state.deadlines.stop()
            await state.batcher.close()

    def inference(
        endpoint: str, handle: Callable[[Request], Awaitable[Response]], name_of: Callable[[Request], str]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap an inference route with its metrics; errors become {"error": ...} responses."""
        series = state.series

        async def route(request: Request) -> Response:
            label = state.model_label(name_of(request))
            start = time.perf_counter()
            inflight = series.inflight(label)
            inflight.inc()
            try:
                state.maybe_inject_fault()
                response = await handle(request)
            except ServingError as e:
                response = error_response(e)
            except Exception as e:
                response = await handle_exception(request, e)
            finally:
                inflight.dec()
            series.observe(label, endpoint, response.status_code, time.perf_counter() - start)
            return response

        return route

    async def decode(
        request: Request, decoder: Callable[..., protocol.InferRequest], m: Model
    ) -> protocol.InferRequest:
        body = await read_body(request, settings.max_body_bytes, state.deadlines)
        args = (m, settings.max_elements, settings.allow_nonfinite)
        header = request.headers.get("inference-header-content-length")
        if header is not None:  # the binary tensor data extension: JSON, then raw tensor bytes
            json_size = binary_header_length(header, len(body))
            view = memoryview(body)
            return decoder(protocol.parse_json(view[:json_size]), *args, binary=view[json_size:])
        if len(body) < OFFLOAD_BYTES:
            return decoder(protocol.parse_json(body), *args)
        # Parsing megabytes of JSON takes milliseconds: keep the loop (health probes, other requests) moving.
        return await asyncio.to_thread(lambda: decoder(protocol.parse_json(body), *args))

    async def infer(request: Request) -> Response:
        m, batcher = state.require(request.path_params["model_name"])
        req = await decode(request, protocol.decode_infer, m)
        outputs = await batcher.submit(req.feeds, req.rows)
        document, chunks = protocol.encode_infer(m, req, outputs)
        if not chunks:
            return json_response(document)
        head = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(
            b"".join([head, *chunks]),
            media_type="application/octet-stream",
            headers={BINARY_HEADER: str(len(head))},
        )

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
        return json_response({"name": "modelstack-serving", "version": __version__, "extensions": EXTENSIONS})

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

    infer_route = inference("infer", infer, path_name)
    routes = [  # hot routes first: Starlette tries them in order (InferFastPath takes POSTs to infer first)
        Route("/v2/models/{model_name}/infer", infer_route, methods=["POST"]),
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
    middleware = [Middleware(CloseWhileDraining, state=state), Middleware(InferFastPath, route=infer_route)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers, middleware=middleware)
    app.state.serving = state
    return app
