"""Request forms: the ways a client can send the same inference request to a server.

A form is one small object: it encodes a request once (``encode``), opens a connection that does single
round trips for latency loops (``connect``), and drives a closed-loop load window (``load``). Every
comparison in this benchmark runs once per selected form (``--form``), against every engine that serves it
(``port`` returns None for an engine that does not).

JSON REST (Open Inference Protocol v2, ``POST /v2/models/{name}/infer``) is the one form so far. To add one,
subclass ``RequestForm`` and register an instance in ``FORMS``; the next ones planned:

- REST with the binary tensor extension (Triton/KServe): the JSON header followed by the raw tensor
  bytes, ``Inference-Header-Content-Length: <JSON header length>``, content type
  ``application/octet-stream``; an ``HttpForm`` with its own ``encode`` (the wrk script in
  ``bench/load_generator.py`` sends ``Content-Type: application/json`` only: give ``wrk`` the request's
  headers first; ``HttpForm.load`` refuses other headers until then).
- gRPC (v2 ``inference.GRPCInferenceService/ModelInfer``) on the server's ``grpc_port`` (``server_env``
  ``{"grpc_port": 0}``; its messages: serving/grpc_predict_v2.proto): ``encode`` holds a
  serialized ``ModelInferRequest``, ``connect`` a channel with a unary call, ``load`` another closed-loop
  generator than wrk (which speaks HTTP/1.1 only), e.g. ghz or h2load.
"""

from __future__ import annotations

import http.client
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from bench.load_generator import WrkResult, wrk
from bench.serving.servers import ServerProcess

JSON_HEADERS = {"Content-Type": "application/json"}  # what bench.load_generator.wrk sends


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
        if request.headers != JSON_HEADERS:
            raise NotImplementedError(f"bench/load_generator.wrk sends {JSON_HEADERS} only, not {request.headers}")
        return wrk(port, request.path, request.body, connections, seconds)


DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}


class JsonRest(HttpForm):
    """Open Inference Protocol v2 REST with the tensors as JSON lists."""

    name = "rest-json"
    title = "JSON REST"

    def encode(self, model: str, inputs: dict[str, np.ndarray]) -> Request:
        tensors = [
            {"name": name, "shape": list(x.shape), "datatype": DATATYPES[str(x.dtype)], "data": x.ravel().tolist()}
            for name, x in inputs.items()
        ]
        return Request(f"/v2/models/{model}/infer", json.dumps({"inputs": tensors}).encode(), dict(JSON_HEADERS))


FORMS: dict[str, RequestForm] = {form.name: form for form in (JsonRest(),)}
