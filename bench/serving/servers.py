"""The server processes under test: ours (``python -m serving``), MLServer, and a bare-uvicorn floor.

Each runs in its own process; a server object knows its ports, its RSS and how to stop (SIGTERM, then
SIGKILL if it hangs). Use them as context managers so a failed run does not leave processes behind.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server in its own process: its ports, its RSS, and a SIGTERM stop (SIGKILL if it hangs)."""

    proc: subprocess.Popen[bytes]
    port: int = 0  # HTTP/REST
    grpc_port: int | None = None  # GRPCInferenceService, where the server has one
    _log: IO[bytes]

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"VmRSS:\s+(\d+)", status)
        assert m, status
        return int(m.group(1)) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


class Server(ServerProcess):
    """Our server, ``python -m serving`` on a free port; ``env`` become MODELSTACK_SERVING_* settings
    (``grpc_port=0``: also gRPC, on a free port, read from the log into ``grpc_port``)."""

    def __init__(self, model_dir: Path, log: Path, **env: object):
        environ = {**os.environ, **{f"MODELSTACK_SERVING_{k.upper()}": str(v) for k, v in env.items()}}
        self.log = log
        self._log = log.open("wb")
        cmd = [sys.executable, "-m", "serving", "--model", str(model_dir), "--port", "0", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.ready():
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(log.read_text())
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready after 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)

    def ready(self) -> bool:
        if not self.port:
            text = self.log.read_text()
            m = re.search(r"^(?!.*gRPC).*listening on 127\.0\.0\.1:(\d+)", text, re.M)  # the HTTP line
            self.port = int(m.group(1)) if m else 0
            if not self.port:
                return False
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status != 200:
                return False
        except OSError:
            return False
        # With grpc_port set, gRPC is listening by the time the server is ready.
        if m := re.search(r"gRPC .*listening on 127\.0\.0\.1:(\d+)", self.log.read_text()):
            self.grpc_port = int(m.group(1))
        return True

    def batch_totals(self) -> tuple[float, float]:
        """(rows, session.run calls) so far, from the server's batch-size histogram on /metrics."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        total = re.search(r"^modelstack_batch_size_sum\S* (\S+)$", text, re.M)
        count = re.search(r"^modelstack_batch_size_count\S* (\S+)$", text, re.M)
        assert total and count, text
        return float(total.group(1)), float(count.group(1))

    def mean_batch(self) -> float:
        """Mean batch size so far."""
        rows, calls = self.batch_totals()
        return rows / calls


MLSERVER_RUNTIME = """
import os
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ["BENCH_THREADS"])
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.settings.parameters.uri, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.dtype = np.int64 if self.session.get_inputs()[0].type == "tensor(int64)" else np.float32
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(self.dtype, copy=False)
        (y,) = self.session.run(None, {self.input: x})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(self.output, y)])
"""


class MLServer(ServerProcess):
    """MLServer in its own process and venv, serving one ONNX file through MLSERVER_RUNTIME; ``batch``:
    its adaptive batching at 8 rows / 2 ms; ``workers``: its parallel inference processes (0: inference in
    the server process, like ours)."""

    def __init__(
        self, exe: Path, model_dir: Path, work: Path, name: str, threads: int, batch: bool, workers: int = 0
    ):
        work.mkdir(parents=True, exist_ok=True)
        (work / "onnx_runtime.py").write_text(MLSERVER_RUNTIME)
        settings: dict[str, object] = {"name": name, "implementation": "onnx_runtime.OnnxModel"}
        settings["parameters"] = {"uri": str(model_dir / "model.onnx")}
        if batch:
            settings.update({"max_batch_size": 8, "max_batch_time": 0.002})
        (work / "model-settings.json").write_text(json.dumps(settings))
        self.port, self.grpc_port = free_port(), free_port()
        env = {
            **os.environ,
            "BENCH_THREADS": str(threads),
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(self.port),
            "MLSERVER_GRPC_PORT": str(self.grpc_port),
            "MLSERVER_METRICS_PORT": str(free_port()),
            "MLSERVER_PARALLEL_WORKERS": str(workers),
            "MLSERVER_DEBUG": "false",
        }
        self._log = (work / "mlserver.log").open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "start", str(work)], cwd=work, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError((work / "mlserver.log").read_text()[-3000:])
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", f"/v2/models/{name}/ready")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("MLServer not ready")


# The HTTP stack alone: uvicorn (same loop/parser as the server) answering a canned body, no Starlette,
# no model. Server p50 minus this floor = what our own code (routing, JSON, checks, batching, metrics) costs.
FLOOR_APP = """
import socket, uvicorn
BODY = b'{"model_name":"floor","outputs":[]}'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)).run(sockets=[sock])
"""


class FloorServer(ServerProcess):
    """A bare uvicorn app answering every HTTP request with a canned 200 (the client + HTTP stack floor)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", FLOOR_APP], stdout=subprocess.PIPE)
        assert self.proc.stdout
        self._log = self.proc.stdout
        self.port = int(self.proc.stdout.readline())
        deadline = time.monotonic() + 30
        while True:  # the socket is bound before uvicorn listens on it
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("floor server did not answer") from None
                time.sleep(0.05)
