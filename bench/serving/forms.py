"""Request forms: the ways a client can send the same inference request to a server.

A form is one small object: it encodes a request once (``encode``), opens a connection that does single
round trips for latency loops (``connect``), and drives a closed-loop load window (``load``). Every
comparison in this benchmark runs once per selected form (``--form``), against every engine that serves it
(``port`` returns None for an engine that does not). The forms of the Open Inference Protocol v2:

- ``rest-json``: ``POST /v2/models/{name}/infer`` with the tensors as JSON lists;
- ``rest-binary``: the same path with the binary tensor data extension (Triton/KServe): the JSON header,
  then the raw tensor bytes (``Inference-Header-Content-Length``), outputs asked back in binary;
- ``grpc``: ``inference.GRPCInferenceService/ModelInfer`` with ``raw_input_contents``, on the server's
  gRPC port; load from ghz (wrk speaks HTTP/1.1 only).
"""

from __future__ import annotations

import http.client
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import grpc
import numpy as np

from bench.load_generator import JSON_HEADERS, WrkResult, ghz, wrk
from bench.serving.servers import REPO, MLServer, ServerProcess


@dataclass(frozen=True)
class Request:
    """One encoded inference request, built once and sent many times: ``path`` is the URL path (REST) or
    the RPC method (gRPC)."""

    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class BadResponse(RuntimeError):
    """The server answered, but not with success."""

    def __init__(self, status: int | str):
        super().__init__(f"response status {status}")
        self.status = status


class Connection(Protocol):
    def round_trip(self, request: Request) -> None:
        """Send ``request``, read the whole response; raise BadResponse unless it succeeded."""

    def close(self) -> None: ...


class RequestForm(ABC):
    name: ClassVar[str]  # the --form value
    title: ClassVar[str]  # how section headings name it
    over_http: ClassVar[bool]  # the bare-uvicorn floor applies (an HTTP request of this form gets a 200)
    server_env: ClassVar[dict[str, object]] = {}  # settings our server needs for this form (gRPC: grpc_port=0)

    def port(self, server: ServerProcess) -> int | None:
        """The port of ``server`` this form talks to; None: the server does not serve this form."""
        return server.port

    @abstractmethod
    def encode(self, model: str, inputs: dict[str, np.ndarray]) -> Request:
        """The inference request of ``model`` with these inputs."""

    @abstractmethod
    def connect(self, port: int) -> Connection:
        """A keep-alive connection to 127.0.0.1:``port`` for single round trips."""

    @abstractmethod
    def load(self, port: int, request: Request, connections: int, seconds: float) -> WrkResult:
        """``connections`` clients sending ``request`` back to back for ``seconds`` (closed loop)."""


class _HttpConnection:
    def __init__(self, port: int):
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def round_trip(self, request: Request) -> None:
        self._conn.request("POST", request.path, request.body, request.headers)
        r = self._conn.getresponse()
        r.read()
        if r.status != 200:
            raise BadResponse(r.status)

    def close(self) -> None:
        self._conn.close()


class HttpForm(RequestForm):
    """A form sent as an HTTP/1.1 POST: http.client round trips, wrk for load."""

    over_http = True

    def connect(self, port: int) -> Connection:
        return _HttpConnection(port)

    def load(self, port: int, request: Request, connections: int, seconds: float) -> WrkResult:
        return wrk(port, request.path, request.body, connections, seconds, request.headers)


DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}


def _tensor(name: str, x: np.ndarray) -> dict[str, object]:
    return {"name": name, "shape": list(x.shape), "datatype": DATATYPES[str(x.dtype)]}


class JsonRest(HttpForm):
    """Open Inference Protocol v2 REST with the tensors as JSON lists."""

    name = "rest-json"
    title = "JSON REST"

    def encode(self, model: str, inputs: dict[str, np.ndarray]) -> Request:
        tensors = [{**_tensor(name, x), "data": x.ravel().tolist()} for name, x in inputs.items()]
        return Request(f"/v2/models/{model}/infer", json.dumps({"inputs": tensors}).encode(), dict(JSON_HEADERS))


class BinaryRest(HttpForm):
    """The binary tensor data extension: JSON header + raw bytes in, raw bytes out (tritonclient's default)."""

    name = "rest-binary"
    title = "binary REST"

    def port(self, server: ServerProcess) -> int | None:
        return None if isinstance(server, MLServer) else server.port  # MLServer does not speak it

    def encode(self, model: str, inputs: dict[str, np.ndarray]) -> Request:
        tensors = [{**_tensor(name, x), "parameters": {"binary_data_size": x.nbytes}} for name, x in inputs.items()]
        head = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
        body = head + b"".join(np.ascontiguousarray(x).tobytes() for x in inputs.values())
        return Request(f"/v2/models/{model}/infer", body, headers)


class _GrpcConnection:
    def __init__(self, port: int):
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._calls: dict[str, grpc.UnaryUnaryMultiCallable] = {}

    def round_trip(self, request: Request) -> None:
        call = self._calls.get(request.path)
        if call is None:  # bytes in, bytes out: no message classes on the client's side of the timing
            call = self._calls[request.path] = self._channel.unary_unary(request.path)
        try:
            call(request.body, timeout=60)
        except grpc.RpcError as e:
            raise BadResponse(str(e.code())) from None

    def close(self) -> None:
        self._channel.close()


class Grpc(RequestForm):
    """v2 gRPC ModelInfer with raw_input_contents, on the server's gRPC port."""

    name = "grpc"
    title = "gRPC"
    over_http = False
    server_env: ClassVar[dict[str, object]] = {"grpc_port": 0}
    PROTO = REPO / "serving" / "grpc_predict_v2.proto"

    def port(self, server: ServerProcess) -> int | None:
        return server.grpc_port or None

    def encode(self, model: str, inputs: dict[str, np.ndarray]) -> Request:
        from serving.grpc_service import pb  # the protocol's messages (our server's copy of the .proto)

        tensors = [pb.ModelInferRequest.InferInputTensor(**_tensor(name, x)) for name, x in inputs.items()]
        raw = [np.ascontiguousarray(x).tobytes() for x in inputs.values()]
        message = pb.ModelInferRequest(model_name=model, inputs=tensors, raw_input_contents=raw)
        return Request("/inference.GRPCInferenceService/ModelInfer", message.SerializeToString())

    def connect(self, port: int) -> Connection:
        return _GrpcConnection(port)

    def load(self, port: int, request: Request, connections: int, seconds: float) -> WrkResult:
        method = request.path.strip("/").replace("/", ".")
        return ghz(port, method, self.PROTO, request.body, connections, seconds)


FORMS: dict[str, RequestForm] = {form.name: form for form in (JsonRest(), BinaryRest(), Grpc())}
