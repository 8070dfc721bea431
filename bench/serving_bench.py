"""Serving benchmark: prints figures and ratios measured side by side in one run (not a test).

    .venv/bin/python bench/serving_bench.py [--seconds 2] [--rounds 6] [--requests 2000] [--threads N] [--mlserver PATH]
    .venv/bin/python bench/serving_bench.py --example digits|text [--mlserver PATH]
    .venv/bin/python bench/serving_bench.py --soak SECONDS

1. Overhead: HTTP round trip (keep-alive http.client loop, batch 1, concurrency 1) minus in-process
   ``session.run`` of the same model with the same thread count, p50 and p99. Targets: <= 0.5 ms / <= 2 ms.
2. Dynamic batching: requests/s at 8 concurrent connections on a compute-bound model, server with
   max_batch_size=8 vs the same server with batching off (max_batch_size=1). Target: >= 1.6x.
3. Server RSS after the load (target < 300 MB).
4. With ``--mlserver PATH`` (the ``mlserver`` executable of its own virtualenv, with onnxruntime installed
   there too): MLServer serving the same ONNX files through a minimal custom runtime, same threads, same
   load generator: overhead at batch 1 and req/s at 8 connections with its adaptive batching (8 rows, 2 ms).
Each engine runs in its own process; only one is measured at a time (idle ones cost no CPU), warm-up first.
Every req/s window is driven by wrk (one event-loop thread, 8 keep-alive connections; needs Debian's ``wrk``)
so the load generator takes little of the CPU the servers share; latency at concurrency 1 uses http.client.

With ``--example digits|text`` the same parts run on that example's optimized artifact instead of the MLPs
(``python -m optimize build --recipe int8-dynamic``, built once into ``.cache/serving-bench/``; the request
is one real row of the example's validation set, its dtype and shape from report.json "inputs"):
overhead at batch 1, req/s at 8 connections vs MLServer (targets: digits >= 2x, text >= 1.5x, against
MLServer's better configuration, adaptive batching on or off), and, on the text example, batching on vs off
at 8 connections (target >= 1.6x) with the p99 check: batched p99 <= unbatched p99 + max_queue_delay + one
batch's compute time (in-process ``session.run`` p50 at max_batch_size rows), plus server RSS (< 300 MB).

``--soak SECONDS`` (alone): the text example's server at its defaults; saturation req/s at 8 connections,
then ~70% of that rate, paced, over 8 connections for SECONDS, RSS sampled every 10 s; prints start/end/max
RSS and growth (target < 5%).
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


from bench.load_generator import wrk, wrk_executable  # noqa: E402
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


DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}


def body(x: np.ndarray, name: str = "x") -> bytes:
    datatype = DATATYPES[str(x.dtype)]
    return json.dumps(
        {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}
    ).encode()


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def session_latency(model_dir: Path, threads: int, n: int, feeds: dict[str, np.ndarray] | None = None) -> list[float]:
    """In-process ``session.run`` times (after warm-up) with the server's session options; default feed:
    one random row for the MLPs' ``x``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the server runs it
    s = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    if feeds is None:
        width = s.get_inputs()[0].shape[1]
        feeds = {"x": np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)}
    for _ in range(min(200, max(20, n // 10))):
        s.run(None, feeds)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s.run(None, feeds)
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


MAX_REQUESTS_PER_CONNECTION = 2_000_000  # every load loop is bounded in count as well as in time


def paced_load(
    port: int, path: str, payload: bytes, connections: int, seconds: float, rate: float
) -> tuple[float, list[float]]:
    """``connections`` keep-alive clients posting ``payload`` for ``seconds``, each on a fixed schedule of
    rate/connections per second (late sends go at once): (requests/s, latencies in s). wrk cannot pace,
    so the soak keeps this client; every closed-loop window uses wrk."""
    counts = [0] * connections
    latencies: list[list[float]] = [[] for _ in range(connections)]
    stop = time.perf_counter() + seconds
    errors: list[str] = []
    interval = connections / rate

    def worker(i: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start = time.perf_counter() + interval * i / connections  # stagger the paced clients
        try:
            for k in range(MAX_REQUESTS_PER_CONNECTION):
                wait = start + k * interval - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                t = time.perf_counter()
                if t >= stop:
                    break
                c.request("POST", path, payload, {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                latencies[i].append(time.perf_counter() - t)
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
    return sum(counts) / (time.perf_counter() - t0), [x for lat in latencies for x in lat]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput window")
    ap.add_argument("--requests", type=int, default=2000, help="latency samples per engine")
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: the server's default)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of alternating measurement windows")
    ap.add_argument("--only", choices=["overhead", "batching", "mlserver"], help="run one part")
    ap.add_argument("--mlserver", type=Path, help="mlserver executable (its own venv) to compare against")
    ap.add_argument("--example", choices=sorted(EXAMPLES), help="run on this example's int8-dynamic artifact")
    ap.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="soak the text example (alone)")
    args = ap.parse_args()

    wrk_executable()  # fail before any server starts
    threads = args.threads or available_cpus()
    print(f"cpus available: {available_cpus()}  ort threads: {threads}  onnxruntime {ort.__version__}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.soak > 0 or args.example:
        with tempfile.TemporaryDirectory() as tmp:
            if args.soak > 0:
                soak(example_artifact("text"), Path(tmp), threads, args.soak)
            else:
                run_example(args.example, example_artifact(args.example), Path(tmp), threads, args)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
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
            wrk(servers[name].port, "/v2/models/heavy/infer", payload, 8, 1)  # warm-up
        for _ in range(rounds):
            for name, server in servers.items():
                rates[name].append(wrk(server.port, "/v2/models/heavy/infer", payload, 8, seconds).rps)
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
        self.output = self.session.get_outputs()[0].name
        self.dtype = np.int64 if self.session.get_inputs()[0].type == "tensor(int64)" else np.float32
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(self.dtype, copy=False)
        (y,) = self.session.run(None, {self.input: x})
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(self.output, y)])
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
    """Same model files, threads and load generator: ours vs MLServer, both up at once, windows alternating."""
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
            wrk(batch_servers[who].port, "/v2/models/heavy/infer", heavy_payload, 8, 1)  # warm-up
        for _ in range(args.rounds):
            for who in names:
                t = http_latency(latency_servers[who].port, "/v2/models/small/infer", small_payload, args.requests)
                p50[who].append(pct(t, 50))
                p99[who].append(pct(t, 99))
                port = batch_servers[who].port
                rps[who].append(wrk(port, "/v2/models/heavy/infer", heavy_payload, 8, args.seconds).rps)
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


# ---------------------------------------------------------------------------------------------------------
# The real examples: examples/<name> trained by `python -m examples.<name>.train`, compressed by
# `python -m optimize build --recipe int8-dynamic`, served as they are.

EXAMPLES = {
    "digits": "overhead-bound (small CNN, float32 [N,1,8,8])",
    "text": "compute-bound (4-layer encoder, int64 token ids [N,64])",
}
MLSERVER_TARGET = {"digits": 2.0, "text": 1.5}
CACHE = REPO / ".cache" / "serving-bench"  # git-ignored


def example_artifact(name: str, recipe: str = "int8-dynamic") -> Path:
    """DIR with model.onnx + report.json for the example, built once per (model.pt, recipe, optimize code)."""
    build = REPO / "examples" / name / "build"
    if not (build / "model.pt").is_file():
        print(f"training examples/{name} ...", flush=True)
        subprocess.run([sys.executable, "-m", f"examples.{name}.train", "--out", str(build)], cwd=REPO, check=True)
    code = b"".join(p.read_bytes() for p in sorted((REPO / "optimize").glob("*.py")))  # rebuild on pipeline changes
    key = hashlib.sha256((build / "model.pt").read_bytes() + recipe.encode() + code).hexdigest()[:16]
    out = CACHE / f"{name}-{recipe}-{key}"
    if not (out / "report.json").is_file():
        print(f"building {out.relative_to(REPO)} ...", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "optimize", "build", "--model", str(build / "model.pt"), "--recipe", recipe]
        cmd += ["--out", str(out), "--validation", str(build / "validation.npz")]
        cmd += ["--calibration", str(build / "calibration.npz")]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, timeout=900)
    return out


def example_rows(model_dir: Path, rows: int) -> tuple[str, np.ndarray]:
    """(input name, the first ``rows`` rows of the example's validation set, in report.json's dtype/shape)."""
    report = json.loads((model_dir / "report.json").read_text())
    (spec,) = report["inputs"]
    name = model_dir.name.split("-")[0]
    data = np.load(REPO / "examples" / name / "build" / "validation.npz", allow_pickle=False)
    x = data[spec["name"]] if spec["name"] in data.files else data["x"]
    x = np.ascontiguousarray(x[:rows], dtype=np.dtype(spec["dtype"]))
    assert list(x.shape[1:]) == spec["shape"][1:], (x.shape, spec["shape"])
    return spec["name"], x


def run_example(name: str, model_dir: Path, root: Path, threads: int, args: argparse.Namespace) -> None:
    report = json.loads((model_dir / "report.json").read_text())
    model = report["name"]
    path = f"/v2/models/{model}/infer"
    input_name, x = example_rows(model_dir, 1)
    payload = body(x, input_name)
    print(f"\n# example {name}: {EXAMPLES[name]}; {model_dir.relative_to(REPO)}")
    print(f"input {input_name} {report['inputs'][0]['dtype']} {list(x.shape)}, request body {len(payload)} bytes")

    if args.only in (None, "overhead"):
        session = session_latency(model_dir, threads, args.requests, {input_name: x})
        server = Server(model_dir, root / f"{name}-overhead.log", intra_op_threads=threads)
        try:
            http_t = http_latency(server.port, path, payload, args.requests)
            rss = server.rss_mb()
        finally:
            server.stop()
        s50, s99, h50, h99 = pct(session, 50), pct(session, 99), pct(http_t, 50), pct(http_t, 99)
        print(f"\n## overhead ({name}, batch 1, concurrency 1, keep-alive http.client)")
        print(f"session.run in-process     p50 {s50:7.3f} ms  p99 {s99:7.3f} ms")
        print(f"HTTP /infer                p50 {h50:7.3f} ms  p99 {h99:7.3f} ms")
        print(
            f"overhead (HTTP - session)  p50 {h50 - s50:7.3f} ms  p99 {h99 - s99:7.3f} ms   (targets <= 0.5 / <= 2 ms)"
        )
        print(f"server RSS: {rss:.0f} MB")

    if name == "text" and args.only in (None, "batching"):
        example_batching(model_dir, root, threads, args, path, input_name, x, payload)

    if args.mlserver and args.only in (None, "mlserver"):
        example_vs_mlserver(name, model_dir, root, threads, args, path, payload)


def example_batching(
    model_dir: Path,
    root: Path,
    threads: int,
    args: argparse.Namespace,
    path: str,
    input_name: str,
    x: np.ndarray,
    payload: bytes,
) -> None:
    """8 connections, batch-1 requests: batching off vs on (delay 0 and 2 ms); req/s ratio and the p99 check."""
    max_batch = 8
    batch_x = np.ascontiguousarray(np.repeat(x, max_batch, axis=0))
    compute = pct(session_latency(model_dir, threads, 100, {input_name: batch_x}), 50)  # one full batch, ms
    single = pct(session_latency(model_dir, threads, 200, {input_name: x}), 50)  # one row, ms
    configs = {
        "off (max_batch_size=1)": ({"max_batch_size": 1}, 0.0),
        "on  (max_batch_size=8, delay 0)": ({"max_batch_size": max_batch, "max_queue_delay_ms": 0}, 0.0),
        "on  (max_batch_size=8, delay 2 ms)": ({"max_batch_size": max_batch, "max_queue_delay_ms": 2}, 2.0),
    }
    servers: dict[str, Server] = {}
    rates: dict[str, list[float]] = {k: [] for k in configs}
    p50s: dict[str, list[float]] = {k: [] for k in configs}
    p99s: dict[str, list[float]] = {k: [] for k in configs}
    try:
        for i, (cname, (env, _)) in enumerate(configs.items()):
            servers[cname] = Server(model_dir, root / f"text-batch{i}.log", intra_op_threads=threads, **env)
            wrk(servers[cname].port, path, payload, 8, 1)  # warm-up
        for _ in range(args.rounds):
            for cname, server in servers.items():
                window = wrk(server.port, path, payload, 8, args.seconds)
                rates[cname].append(window.rps)
                p50s[cname].append(window.p50_ms)
                p99s[cname].append(window.p99_ms)
        batch = {cname: mean_batch(server.port) for cname, server in servers.items()}
        rss = {cname: server.rss_mb() for cname, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    off_name = "off (max_batch_size=1)"
    off = np.array(rates[off_name])
    off_p99 = float(np.median(p99s[off_name]))
    print(f"\n## dynamic batching (text; 8 connections, batch 1 each; {args.rounds} rounds of {args.seconds:g} s)")
    print(f"one batch of {max_batch} rows, in-process session.run p50: {compute:.2f} ms (1 row: {single:.2f} ms)")
    print(
        f"ORT alone does {single * max_batch / compute:.2f}x more rows/s at batch {max_batch} than at batch 1: "
        "the compute that batching can save"
    )
    for cname, (_, delay) in configs.items():
        ratio = float(np.median(np.array(rates[cname]) / off))
        p50, p99 = float(np.median(p50s[cname])), float(np.median(p99s[cname]))
        print(
            f"batching {cname:36s} {np.median(rates[cname]):7.1f} req/s  x{ratio:.2f} (median per-round ratio)  "
            f"mean batch {batch[cname]:.2f}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  RSS {rss[cname]:.0f} MB"
        )
        if cname != off_name:
            bound = off_p99 + delay + compute
            verdict = "met" if ratio >= 1.6 else "MISSED"
            print(f"    speed-up target >= 1.6x: {verdict}")
            verdict = "met" if p99 <= bound else "MISSED"
            print(
                f"    p99 check: {p99:.2f} ms <= unbatched p99 {off_p99:.2f} + max_queue_delay {delay:g} "
                f"+ batch compute {compute:.2f} = {bound:.2f} ms: {verdict}"
            )
    top = max(rss.values())
    print(
        f"server RSS with the text model loaded, after load (max): {top:.0f} MB  (target < 300 MB: "
        f"{'met' if top < 300 else 'MISSED'})"
    )


def example_vs_mlserver(
    name: str, model_dir: Path, root: Path, threads: int, args: argparse.Namespace, path: str, payload: bytes
) -> None:
    """req/s at 8 connections and batch-1 latency at 1: ours (defaults: batching 8 rows, no delay) vs MLServer
    with adaptive batching (8 rows, 2 ms) and without; the ratio is against MLServer's better one."""
    model = json.loads((model_dir / "report.json").read_text())["name"]
    engines: dict[str, Server | MLServer] = {}
    rps: dict[str, list[float]] = {}
    p50: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    latency_requests = max(50, args.requests // (4 if name == "digits" else 20))
    try:
        engines["ours"] = Server(model_dir, root / f"{name}-ours.log", intra_op_threads=threads)
        engines["mlserver batching"] = MLServer(args.mlserver, model_dir, root / "mls-b", model, threads, batch=True)
        engines["mlserver no batching"] = MLServer(
            args.mlserver, model_dir, root / "mls-nb", model, threads, batch=False
        )
        for who, server in engines.items():
            wrk(server.port, path, payload, 8, 1)  # warm-up
            rps[who], p50[who], p99[who] = [], [], []
        for _ in range(args.rounds):
            for who, server in engines.items():
                rps[who].append(wrk(server.port, path, payload, 8, args.seconds).rps)
                t = http_latency(server.port, path, payload, latency_requests)
                p50[who].append(pct(t, 50))
                p99[who].append(pct(t, 99))
        rss = {who: server.rss_mb() for who, server in engines.items()}
    finally:
        for server in engines.values():
            server.stop()
    print(f"\n## vs MLServer ({name}; same ONNX file, threads and client; {args.rounds} rounds of {args.seconds:g} s)")
    for who in engines:
        print(
            f"{who:22s} 8 conns {np.median(rps[who]):7.1f} req/s (min/max {min(rps[who]):.0f}/{max(rps[who]):.0f})"
            f"   1 conn p50 {np.median(p50[who]):6.3f} ms  p99 {np.median(p99[who]):6.3f} ms   RSS {rss[who]:.0f} MB"
        )
    ours = np.array(rps["ours"])
    best = np.maximum(np.array(rps["mlserver batching"]), np.array(rps["mlserver no batching"]))
    ratio = float(np.median(ours / best))
    lat = float(np.median(np.array(p50["ours"]) / np.array(p50["mlserver no batching"])))
    target = MLSERVER_TARGET[name]
    print(
        f"throughput ours / MLServer's better config (median per-round ratio): {ratio:.2f}x   "
        f"(target >= {target:g}x: {'met' if ratio >= target else 'MISSED'})"
    )
    print(f"batch-1 p50 latency ours / MLServer (no batching): {lat:.2f}x")


def soak(model_dir: Path, root: Path, threads: int, seconds: float) -> None:
    """Saturation req/s at 8 connections, then ~70% of it, paced, for ``seconds``; RSS every 10 s."""
    model = json.loads((model_dir / "report.json").read_text())["name"]
    path = f"/v2/models/{model}/infer"
    input_name, x = example_rows(model_dir, 1)
    payload = body(x, input_name)
    server = Server(model_dir, root / "soak.log", intra_op_threads=threads)
    samples: list[tuple[float, float]] = []
    try:
        wrk(server.port, path, payload, 8, 2)  # warm-up
        saturation = wrk(server.port, path, payload, 8, 10).rps
        rate = 0.7 * saturation
        print(
            f"\n## soak (text, server defaults, 8 connections): saturation {saturation:.1f} req/s, "
            f"driving {rate:.1f} req/s (70%) for {seconds:g} s",
            flush=True,
        )
        result: dict[str, Any] = {}

        def drive() -> None:
            try:
                result["rate"], result["lat"] = paced_load(server.port, path, payload, 8, seconds, rate)
            except Exception as e:  # reported below
                result["error"] = e

        driver = threading.Thread(target=drive)
        t0 = time.monotonic()
        driver.start()
        for i in range(int(seconds // 10) + 2):  # bounded: one sample per 10 s for the soak's length
            samples.append((time.monotonic() - t0, server.rss_mb()))
            print(
                f"  t={samples[-1][0]:6.1f} s  RSS {samples[-1][1]:6.1f} MB  load avg {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            driver.join(timeout=max(0.0, t0 + 10 * (i + 1) - time.monotonic()))
            if not driver.is_alive():
                break
        driver.join(timeout=seconds + 120)
        samples.append((time.monotonic() - t0, server.rss_mb()))
    finally:
        server.stop()
    if "error" in result:
        raise RuntimeError(f"soak load failed: {result['error']}")
    start, end = samples[0][1], samples[-1][1]
    top = max(rss for _, rss in samples)
    growth = (end - start) / start * 100
    lat = result["lat"]
    print(
        f"achieved {result['rate']:.1f} req/s, {len(lat)} requests, all 200; "
        f"p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms"
    )
    print(
        f"RSS start {start:.1f} MB  end {end:.1f} MB  max {top:.1f} MB  growth {growth:+.2f}%  "
        f"(target < 5%: {'met' if growth < 5 else 'MISSED'}; < 300 MB: {'met' if top < 300 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
