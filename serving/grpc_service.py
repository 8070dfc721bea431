"""The Open Inference Protocol's gRPC API (``inference.GRPCInferenceService``, as Triton, KServe and
MLServer serve it) on its own port, in the same process and event loop as the REST routes: the same
model, batcher, limits, metrics and errors. A REST error's status maps to the gRPC code below
(400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 503 -> UNAVAILABLE, ...); the metrics count it under
``endpoint="grpc"`` with that HTTP status, so the alerts on ``code=~"5.."`` see gRPC failures too.
Inputs come as ``raw_input_contents`` (what Triton's client sends) or typed ``contents``; outputs go
back as ``raw_output_contents``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from grpc import aio

from serving import __version__, protocol
from serving.errors import BadRequest, ModelNotFound, ServingError
from serving.grpc_predict_v2_descriptor import FILE_DESCRIPTOR
from serving.model import Model, TensorSpec
from serving.state import ServerState
from serving.tensor_bytes import from_bytes, to_bytes

log = logging.getLogger("serving")


def _messages() -> SimpleNamespace:
    """The protocol's messages (pb.ModelInferRequest, ...), built in a descriptor pool of our own: another
    library's copy of the same "inference" package in this process (a client's) cannot clash with it."""
    pool = descriptor_pool.DescriptorPool()
    file = pool.AddSerializedFile(FILE_DESCRIPTOR)
    classes = message_factory.GetMessageClassesForFiles([file.name], pool)
    return SimpleNamespace(**{name.rpartition(".")[2]: cls for name, cls in classes.items()})


pb = _messages()

SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["binary_tensor_data"]  # what /v2 and ServerMetadata announce
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# datatype -> the typed field of InferTensorContents that carries it (FP16 travels raw only).
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def _from_contents(spec: TensorSpec, shape: tuple[int, ...], contents: Any, budget: int, nonfinite: bool) -> np.ndarray:
    field = _CONTENTS.get(spec.datatype)
    if field is None:
        raise BadRequest(f"input {spec.name!r}: {spec.datatype} travels in raw_input_contents only")
    values = getattr(contents, field)
    if spec.datatype == "BYTES":
        try:
            values = [v.decode() for v in values]
        except UnicodeDecodeError:
            raise BadRequest(f"input {spec.name!r}: BYTES contents are not UTF-8 text") from None
    return protocol.to_array(spec, list(values), shape, budget, nonfinite)


def decode(request: Any, model: Model, max_elements: int, allow_nonfinite: bool) -> protocol.InferRequest:
    """A ModelInferRequest -> the request the batcher takes, with the REST path's checks and messages."""
    if request.model_version not in ("", "1"):
        raise ModelNotFound(f"model {model.name!r} has no version {request.model_version[:50]!r}; leave it empty")
    if not request.inputs:
        raise BadRequest("'inputs' must hold at least one tensor")
    protocol.check_names(model, [t.name for t in request.inputs])
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    feeds: dict[str, np.ndarray] = {}
    budget = max_elements
    for i, t in enumerate(request.inputs):
        spec = model.input_by_name[t.name]
        protocol.check_datatype(spec, t.datatype)
        shape = protocol.check_shape(spec, list(t.shape))
        if raw:
            if t.HasField("contents"):
                raise BadRequest(f"input {spec.name!r}: both contents and raw_input_contents given; send one")
            feeds[spec.name] = from_bytes(spec, shape, raw[i], budget, allow_nonfinite)
        else:
            feeds[spec.name] = _from_contents(spec, shape, t.contents, budget, allow_nonfinite)
        budget -= feeds[spec.name].size
    for o in request.outputs:
        if "classification" in o.parameters:
            raise BadRequest(f"output {o.name!r}: the 'classification' extension is not supported")
    asked = [{"name": o.name} for o in request.outputs] or None
    names, _ = protocol.requested_outputs(model, asked, None)
    return protocol.InferRequest(request.id or None, feeds, protocol.batch_rows(model, feeds), names)


def encode(model: Model, req: protocol.InferRequest, outputs: dict[str, np.ndarray]) -> Any:
    by_name = {s.name: s for s in model.outputs}
    response = pb.ModelInferResponse(model_name=model.name, id=req.id or "")
    for name in req.output_names:
        arr = outputs[name]
        response.outputs.add(name=name, datatype=by_name[name].datatype, shape=arr.shape)
        response.raw_output_contents.append(to_bytes(arr))
    return response


Handler = Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]


class GrpcServer:
    """grpc.aio's server with the service's methods registered by name (no generated servicer): each
    takes the request's bytes and parses them itself, so a malformed message is INVALID_ARGUMENT, not
    the INTERNAL that a failing deserializer would give."""

    def __init__(self, state: ServerState):
        self.state = state
        self.port = 0
        self._server: aio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        limit = self.state.settings.max_body_bytes
        self._server = aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1)]
        )
        methods = {
            "ServerLive": self._method(pb.ServerLiveRequest, self.server_live),
            "ServerReady": self._method(pb.ServerReadyRequest, self.server_ready),
            "ModelReady": self._method(pb.ModelReadyRequest, self.model_ready),
            "ServerMetadata": self._method(pb.ServerMetadataRequest, self.server_metadata),
            "ModelMetadata": self._method(pb.ModelMetadataRequest, self.model_metadata),
            "ModelInfer": self._method(pb.ModelInferRequest, self.model_infer, observed=True),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as e:  # grpc says only "Failed to bind"
            raise RuntimeError(f"gRPC cannot listen on {address} (in use, or not an address here?): {e}") from None
        await self._server.start()
        log.info("gRPC (%s) listening on %s:%d", SERVICE, host, self.port)

    async def stop(self, grace_s: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)

    def _method(self, message: Any, call: Callable[[Any], Awaitable[Any]], observed: bool = False) -> Any:
        state = self.state

        async def handle(data: bytes, context: aio.ServicerContext) -> bytes:
            start = time.perf_counter()
            label, inflight, error = "", None, None
            try:
                try:
                    request = message.FromString(data)
                except DecodeError:
                    raise BadRequest(f"the request is not a valid {message.DESCRIPTOR.full_name} message") from None
                if observed:
                    label = state.model_label(request.model_name)
                    inflight = state.series.inflight(label)
                    inflight.inc()
                    state.maybe_inject_fault()
                reply = await call(request)
                code = 200
            except ServingError as e:
                reply, code, error = None, e.status_code, e
            except Exception:
                log.exception("gRPC %s failed", message.DESCRIPTOR.name)
                reply, code, error = None, 500, ServingError("internal server error", 500)
            finally:
                if inflight is not None:
                    inflight.dec()
            if observed and label:
                state.series.observe(label, "grpc", code, time.perf_counter() - start)
            if error is not None:
                await context.abort(_CODES.get(code, grpc.StatusCode.INTERNAL), error.message)
            return reply.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(handle)

    async def server_live(self, request: Any) -> Any:
        batcher = self.state.batcher
        return pb.ServerLiveResponse(live=batcher is None or batcher.healthy)

    async def server_ready(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def model_ready(self, request: Any) -> Any:
        self.state.require(request.name)
        return pb.ModelReadyResponse(ready=self.state.ready)

    async def server_metadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(name="modelstack-serving", version=__version__, extensions=EXTENSIONS)

    async def model_metadata(self, request: Any) -> Any:
        m, _ = self.state.require(request.name)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=m.name,
            versions=["1"],
            platform="onnxruntime_onnx",
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in m.inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in m.outputs],
        )

    async def model_infer(self, request: Any) -> Any:
        settings = self.state.settings
        m, batcher = self.state.require(request.model_name)
        req = decode(request, m, settings.max_elements, settings.allow_nonfinite)
        outputs = await batcher.submit(req.feeds, req.rows)
        return encode(m, req, outputs)
