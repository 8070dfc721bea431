"""Serving benchmark: prints figures and ratios measured side by side in one run (not a test).

    .venv/bin/python bench/serving_bench.py [--seconds 2] [--rounds 6] [--requests 2000] [--threads N] [--mlserver PATH]

1. Overhead: HTTP round trip (keep-alive http.client loop, batch 1, concurrency 1) minus in-process
   ``session.run`` of the same model with the same thread count, p50 and p99. Targets: <= 0.5 ms / <= 2 ms.
2. Dynamic batching: requests/s at 8 concurrent connections on a compute-bound model, server with
   max_batch_size=8 vs the same server with batching off (max_batch_size=1). Target: >= 1.6x.
3. Server RSS after the load (target < 300 MB).
4. With ``--mlserver PATH`` (the ``mlserver`` executable of its own virtualenv, with onnxruntime installed
   there too): MLServer serving the same ONNX files through a minimal custom runtime, same threads, same
   client loops: overhead at batch 1 and req/s at 8 connections with its adaptive batching (8 rows, 2 ms).
Each engine runs in its own process; only one is measured at a time (idle ones cost no CPU), warm-up first.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: make the serving package importable


from serving.resources import available_cpus  # noqa: E402


def mlp(in_width: int, hidden: int, layers: int, out_width: int) -> onnx.ModelProto:
    """x [N, in_width] -> ``layers`` MatMul+Relu of width ``hidden`` (one shared weight) -> y [N, out_width]."""
    rng = np.random.default_rng(0)

    def weight(name: str, rows: int, cols: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32), name)

    inits = [weight("Win", in_width, hidden), weight("W", hidden, hidden), weight("Wout", hidden, out_width)]
    nodes, prev = [helper.make_node("MatMul", ["x", "Win"], ["h"])], "h"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [prev, "W"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("MatMul", [prev, "Wout"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write_dir(model: onnx.ModelProto, out: Path, name: str) -> Path:
    out.mkdir(parents=True)
    data = model.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    (out / "report.json").write_text(json.dumps({"name": name, "digest": hashlib.sha256(data).hexdigest()}))
    return out


class _ServerProcess:
    """A server in its own process: its RSS, and a SIGTERM stop (SIGKILL if it hangs)."""

    proc: subprocess.Popen
    _log: Any

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class Server(_ServerProcess):
    def __init__(self, model_dir: Path, log: Path, **env: object):
        environ = {**os.environ, **{f"MODELSTACK_SERVING_{k.upper()}": str(v) for k, v in env.items()}}
        self.log = log
        self._log = log.open("wb")
        cmd = [sys.executable, "-m", "serving", "--model", str(model_dir), "--port", "0", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=self._log, stderr=subprocess.STDOUT)
        deadline, self.port = time.monotonic() + 60, 0
        while time.monotonic() < deadline and not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.05)

    def ready(self) -> bool:
        if not self.port:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log.read_text())
            self.port = int(m.group(1)) if m else 0
            if not self.port:
                return False
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/v2/health/ready")
            return c.getresponse().status == 200
        except OSError:
            return False



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


def floor_latency(payload: bytes, n: int) -> list[float]:
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_APP], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                return http_latency(port, "/", payload, n)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("floor server did not answer")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def body(x: np.ndarray) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def session_latency(model_dir: Path, threads: int, n: int) -> list[float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the server runs it
    s = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    width = s.get_inputs()[0].shape[1]
    x = np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)
    for _ in range(200):
        s.run(None, {"x": x})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s.run(None, {"x": x})
        times.append(time.perf_counter() - t)
    return times


def http_latency(port: int, path: str, payload: bytes, n: int) -> list[float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    for _ in range(200):
        c.request("POST", path, payload, headers)
        c.getresponse().read()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("POST", path, payload, headers)
        r = c.getresponse()
        r.read()
        times.append(time.perf_counter() - t)
        assert r.status == 200
    c.close()
    return times


def throughput(port: int, path: str, payload: bytes, connections: int, seconds: float) -> float:
    counts = [0] * connections
    stop = time.perf_counter() + seconds
    errors: list[str] = []

    def worker(i: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.perf_counter() < stop:
                c.request("POST", path, payload, {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(str(r.status))
                counts[i] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"non-200 responses: {errors[:5]}")
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput window")
    ap.add_argument("--requests", type=int, default=2000, help="latency samples per engine")
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: the server's default)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of alternating measurement windows")
    ap.add_argument("--only", choices=["overhead", "batching", "mlserver"], help="run one part")
    ap.add_argument("--mlserver", type=Path, help="mlserver executable (its own venv) to compare against")
    args = ap.parse_args()

    threads = args.threads or available_cpus()
    print(f"cpus available: {available_cpus()}  ort threads: {threads}  onnxruntime {ort.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        small = write_dir(mlp(32, 64, 1, 8), root / "small", "small")
        heavy = write_dir(mlp(64, 1024, 8, 16), root / "heavy", "heavy")

        if args.only in (None, "overhead"):
            overhead(small, root, threads, args.requests)
        if args.only in (None, "batching"):
            batching(heavy, root, threads, args.rounds, args.seconds)
        if args.mlserver and args.only in (None, "mlserver"):
            mlserver_compare(args.mlserver, small, heavy, root, threads, args)


def overhead(small: Path, root: Path, threads: int, requests: int) -> None:
    """HTTP p50/p99 minus in-process session.run p50/p99, batch 1, one keep-alive connection."""
    session = session_latency(small, threads, requests)
    payload = body(np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32))
    floor = floor_latency(payload, requests)
    server = Server(small, root / "small.log", intra_op_threads=threads)
    try:
        http_t = http_latency(server.port, "/v2/models/small/infer", payload, requests)
        rss = server.rss_mb()
    finally:
        server.stop()
    s50, s99, h50, h99 = pct(session, 50), pct(session, 99), pct(http_t, 50), pct(http_t, 99)
    f50, f99 = pct(floor, 50), pct(floor, 99)
    print("\n## overhead (MLP 32->64->8, batch 1, concurrency 1, keep-alive http.client)")
    print(f"session.run in-process     p50 {s50:7.3f} ms  p99 {s99:7.3f} ms")
    print(f"HTTP /infer                p50 {h50:7.3f} ms  p99 {h99:7.3f} ms")
    print(f"overhead (HTTP - session)  p50 {h50 - s50:7.3f} ms  p99 {h99 - s99:7.3f} ms   (targets <= 0.5 / <= 2 ms)")
    print(f"bare uvicorn floor         p50 {f50:7.3f} ms  p99 {f99:7.3f} ms   (client + HTTP stack, no app)")
    print(f"our code (HTTP - floor - session) p50 {h50 - f50 - s50:7.3f} ms")
    print(f"server RSS: {rss:.0f} MB")


def mean_batch(port: int) -> float:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    total = float(re.search(r"^modelstack_batch_size_sum\S* (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    count = float(re.search(r"^modelstack_batch_size_count\S* (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return total / count


def batching(heavy: Path, root: Path, threads: int, rounds: int, seconds: float) -> None:
    """req/s at 8 connections: batching off vs on (no delay, and the stack's 2 ms delay).

    All three servers start once and stay up (idle ones cost no CPU); measurement windows rotate among
    them round after round, so load from other processes on a shared machine hits each alike. The
    speed-up is the median of the per-round ratios."""
    payload = body(np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32))
    configs = {
        "off (max_batch_size=1)": {"max_batch_size": 1},
        "on  (max_batch_size=8, delay 0)": {"max_batch_size": 8, "max_queue_delay_ms": 0},
        "on  (max_batch_size=8, delay 2 ms)": {"max_batch_size": 8, "max_queue_delay_ms": 2},
    }
    servers: dict[str, Server] = {}
    rates: dict[str, list[float]] = {k: [] for k in configs}
    try:
        for i, (name, env) in enumerate(configs.items()):
            servers[name] = Server(heavy, root / f"heavy{i}.log", intra_op_threads=threads, **env)
            throughput(servers[name].port, "/v2/models/heavy/infer", payload, 8, 0.5)  # warm-up
        for _ in range(rounds):
            for name, server in servers.items():
                rates[name].append(throughput(server.port, "/v2/models/heavy/infer", payload, 8, seconds))
        batch = {name: mean_batch(server.port) for name, server in servers.items()}
        rss = max(server.rss_mb() for server in servers.values())
    finally:
        for server in servers.values():
            server.stop()
    off = np.array(rates["off (max_batch_size=1)"])
    print(f"\n## dynamic batching (MLP 64->1024x8->16; 8 connections, batch 1 each; {rounds} rounds of {seconds:g} s)")
    for name in configs:
        ratio = float(np.median(np.array(rates[name]) / off))
        print(
            f"batching {name:36s} {np.median(rates[name]):7.1f} req/s  x{ratio:.2f} (median per-round ratio)  "
            f"mean batch {batch[name]:.2f}  min/max {min(rates[name]):.0f}/{max(rates[name]):.0f}"
        )
    print("target: batching on >= 1.6x off")
    print(f"server RSS after load (max): {rss:.0f} MB   (target < 300 MB)")


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
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        (y,) = self.session.run(None, {self.input: x})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MLServer(_ServerProcess):
    """MLServer in its own process and venv, serving one ONNX file through MLSERVER_RUNTIME."""

    def __init__(self, exe: Path, model_dir: Path, work: Path, name: str, threads: int, batch: bool):
        work.mkdir(parents=True, exist_ok=True)
        (work / "onnx_runtime.py").write_text(MLSERVER_RUNTIME)
        settings = {"name": name, "implementation": "onnx_runtime.OnnxModel"}
        settings["parameters"] = {"uri": str(model_dir / "model.onnx")}  # type: ignore[assignment]
        if batch:
            settings.update({"max_batch_size": 8, "max_batch_time": 0.002})  # type: ignore[dict-item]
        (work / "model-settings.json").write_text(json.dumps(settings))
        self.port = free_port()
        env = {
            **os.environ,
            "BENCH_THREADS": str(threads),
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(self.port),
            "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(free_port()),
            "MLSERVER_PARALLEL_WORKERS": "0",  # inference in the server process, like ours
            "MLSERVER_DEBUG": "false",
        }
        self._log = (work / "mlserver.log").open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "start", str(work)], cwd=work, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((work / "mlserver.log").read_text()[-3000:])
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", f"/v2/models/{name}/ready")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("MLServer not ready")



def mlserver_compare(exe: Path, small: Path, heavy: Path, root: Path, threads: int, args: argparse.Namespace) -> None:
    """Same model files, threads and client loops: ours vs MLServer, both up at once, windows alternating."""
    small_payload = body(np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32))
    heavy_payload = body(np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32))
    names = ("ours", "mlserver")
    p50: dict[str, list[float]] = {k: [] for k in names}
    p99: dict[str, list[float]] = {k: [] for k in names}
    rps: dict[str, list[float]] = {k: [] for k in names}
    latency_servers: dict[str, Server | MLServer] = {}
    batch_servers: dict[str, Server | MLServer] = {}
    try:
        latency_servers["ours"] = Server(small, root / "cmp-small.log", intra_op_threads=threads)
        latency_servers["mlserver"] = MLServer(exe, small, root / "mls-small", "small", threads, batch=False)
        batch_servers["ours"] = Server(heavy, root / "cmp-heavy.log", intra_op_threads=threads, max_queue_delay_ms=2)
        batch_servers["mlserver"] = MLServer(exe, heavy, root / "mls-heavy", "heavy", threads, batch=True)
        for who in names:
            throughput(batch_servers[who].port, "/v2/models/heavy/infer", heavy_payload, 8, 0.5)  # warm-up
        for _ in range(args.rounds):
            for who in names:
                t = http_latency(latency_servers[who].port, "/v2/models/small/infer", small_payload, args.requests)
                p50[who].append(pct(t, 50))
                p99[who].append(pct(t, 99))
                port = batch_servers[who].port
                rps[who].append(throughput(port, "/v2/models/heavy/infer", heavy_payload, 8, args.seconds))
        rss = {who: max(latency_servers[who].rss_mb(), batch_servers[who].rss_mb()) for who in names}
    finally:
        for server in [*latency_servers.values(), *batch_servers.values()]:
            server.stop()
    print("\n## vs MLServer (same ONNX files and threads; MLServer via a minimal onnxruntime MLModel)")
    for who in names:
        print(
            f"{who:9s} batch-1 p50 {np.median(p50[who]):6.3f} ms  p99 {np.median(p99[who]):6.3f} ms   "
            f"8 conns (batching 8 rows/2 ms) {np.median(rps[who]):7.1f} req/s   RSS {rss[who]:.0f} MB"
        )
    lat = np.median(np.array(p50["ours"]) / np.array(p50["mlserver"]))
    thr = np.median(np.array(rps["ours"]) / np.array(rps["mlserver"]))
    print(f"ratio ours/MLServer (median per round): p50 latency {lat:.2f}x, throughput {thr:.2f}x")


if __name__ == "__main__":
    main()
