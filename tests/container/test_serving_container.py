"""The serving image, built for real and run hardened on a real Docker engine (issue 5's container test).

The build context is the one the ServingImage component builds from (serving.context.assemble), with the
offline wheelhouse and the debootstrap base image as BASE_IMAGE; the container runs with a read-only root
filesystem, a tmpfs /tmp, uid/gid 10001, no capabilities and no-new-privileges, published on 127.0.0.1
only. Containers and the test image are removed at teardown; the base image and the wheelhouse stay cached.
dockerd is started if none answers and is left running (see docs/serving.md, "Container").
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from serving.context import assemble
from tests.container import engine
from tests.serving import models
from tests.serving.server import metric

pytestmark = pytest.mark.slow

MODEL = "mlp"
IN, HIDDEN, LAYERS, OUT = 16, 1024, 16, 4  # ~34 MFLOP a row in, 16 floats in and 4 out: the server does the work
ROWS = 32  # per load request: tens of milliseconds of compute, so requests are in flight when SIGTERM lands
HARDENING = ["--read-only", "--tmpfs", "/tmp", "--user", "10001:10001", "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges"]


def mlp_model(seed: int = 7) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [N, 16] -> tanh(x A) -> 16 x tanh(h W) -> h B -> y [N, 4], all FP32, batch dimension free."""
    rng = np.random.default_rng(seed)
    weights = {
        "A": rng.standard_normal((IN, HIDDEN)) / np.sqrt(IN),
        "W": rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN),
        "B": rng.standard_normal((HIDDEN, OUT)) / np.sqrt(HIDDEN),
    }
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    nodes = [helper.make_node("MatMul", ["x", "A"], ["a"]), helper.make_node("Tanh", ["a"], ["h0"])]
    for i in range(LAYERS):
        nodes += [helper.make_node("MatMul", [f"h{i}", "W"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"])]
    nodes.append(helper.make_node("MatMul", [f"h{LAYERS}", "B"], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=models.OPSET, ir_version=8)
    onnx.checker.check_model(model)
    return model, weights


def expected(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    h = np.tanh(x @ w["A"])
    for _ in range(LAYERS):
        h = np.tanh(h @ w["W"])
    return h @ w["B"]


def infer_body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


@dataclass
class Built:
    docker: engine.Docker
    tag: str
    model_dir: Path
    weights: dict[str, np.ndarray]
    workdir: Path
    containers: list[str] = field(default_factory=list)

    def start(self, role: str, *extra: str) -> tuple[str, str]:
        """Run the image hardened, port 8080 published on 127.0.0.1 only; returns (container id, base URL)."""
        name = f"modelstack-test-{self.docker.run_id}-{role}"
        cid = self.docker.run_detached(self.tag, name, *HARDENING, "-p", "127.0.0.1::8080", *extra)
        self.containers.append(cid)
        url = f"http://127.0.0.1:{self.docker.host_port(cid)}"
        engine.wait_ready(url, cid, self.docker)
        return cid, url


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    started = engine.ensure_engine()
    timings["engine (started)" if started else "engine"] = time.monotonic() - t0
    docker = engine.Docker(run_id=uuid.uuid4().hex[:10])
    docker.sweep()
    try:
        t = time.monotonic()
        base = engine.base_image()
        timings["base image"] = time.monotonic() - t
        t = time.monotonic()
        wheels = engine.wheelhouse()
        timings["wheelhouse"] = time.monotonic() - t

        root = tmp_path_factory.mktemp("container")
        model, weights = mlp_model()
        model_dir = models.write_model_dir(model, root / "model", MODEL)
        context = assemble(model_dir, root / "context", wheelhouse=wheels)
        tag = f"modelstack-serving-test:{docker.run_id}"
        t = time.monotonic()
        docker.build(context, tag, root / "build.log", BASE_IMAGE=base)
        timings["build"] = time.monotonic() - t
        print("container test set-up:", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        yield Built(docker, tag, model_dir, weights, root)
    finally:
        docker.cleanup()


@pytest.fixture(scope="module")
def served(built: Built) -> tuple[str, str]:
    return built.start("api")


def test_image_runs_as_10001_without_compilers_or_pip(built: Built) -> None:
    config = json.loads(built.docker("image", "inspect", built.tag).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python", "-m", "serving"]
    probe = ("id -u; id -g; for c in gcc cc c++ g++ clang make ld as pip pip3; do command -v $c; done; "
             "python -c 'import pip' 2>/dev/null && echo has-pip; true")
    out = built.docker("run", "--rm", "--label", built.docker.label, *HARDENING, "--entrypoint", "sh", built.tag,
                       "-c", probe).stdout.split()
    assert out == ["10001", "10001"], f"expected only uid and gid, found tools: {out[2:]}"


def test_serves_health_metadata_infer_and_metrics(built: Built, served: tuple[str, str]) -> None:
    _, url = served
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        meta = client.get(f"/v2/models/{MODEL}").json()
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, IN]}]
        assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, OUT]}]
        digest = json.loads((built.model_dir / "report.json").read_text())["digest"]
        assert meta["parameters"]["digest"] == digest

        x = np.random.default_rng(1).standard_normal((3, IN)).astype(np.float32)
        r = client.post(f"/v2/models/{MODEL}/infer", json=infer_body(x))
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [3, OUT]
        np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(3, OUT), expected(x, built.weights),
                                   rtol=1e-3, atol=1e-4)
        assert client.post(f"/v2/models/{MODEL}/infer", json={"inputs": []}).status_code == 400

        text = client.get("/metrics").text
        assert "modelstack_requests_total" in text
        assert metric(text, "modelstack_requests_total", model=MODEL, code="200") >= 1
        assert metric(text, "modelstack_requests_total", model=MODEL, code="400") >= 1
        assert metric(text, "modelstack_ready") == 1


def test_runs_on_a_read_only_root_with_no_privileges(built: Built, served: tuple[str, str]) -> None:
    cid, _ = served
    host = json.loads(built.docker("inspect", cid).stdout)[0]["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert {b["HostIp"] for b in host["PortBindings"]["8080/tcp"]} == {"127.0.0.1"}

    # The server process itself (pid 1): uid/gid 10001, no effective capabilities, no_new_privs set.
    status = built.docker("exec", cid, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["10001"] * 4 and fields["Gid"].split() == ["10001"] * 4
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    # The root filesystem refuses writes (even where the image's files live); /tmp takes them.
    for path in ("/probe", "/app/probe", "/srv/model/probe", "/opt/venv/probe"):
        denied = built.docker("exec", cid, "sh", "-c", f"echo x > {path}", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, (path, denied.stderr)
    built.docker("exec", cid, "sh", "-c", "echo x > /tmp/probe && rm /tmp/probe")
    assert " / " in built.docker("exec", cid, "sh", "-c", "grep ' / ' /proc/mounts | grep -w ro").stdout


@dataclass
class Load:
    ok: set[str] = field(default_factory=set)  # request ids answered 200
    bad: list[tuple[str, int, str]] = field(default_factory=list)  # answered, but not 200
    unanswered: list[tuple[str, str]] = field(default_factory=list)  # connection failed, no response
    hung: list[str] = field(default_factory=list)  # timed out waiting for a response
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(url: str, worker: int, body: bytes, stop: threading.Event, load: Load) -> None:
    n = 0
    client = httpx.Client(base_url=url, timeout=httpx.Timeout(40.0, connect=5.0),
                          headers={"content-type": "application/json"})
    try:
        while not stop.is_set():
            rid = f"w{worker}-{n}"
            n += 1
            try:
                r = client.post(f"/v2/models/{MODEL}/infer", params={"rid": rid}, content=body)
            except httpx.TimeoutException as e:
                with load.lock:
                    load.hung.append(f"{rid}: {e!r}")
                continue
            except httpx.TransportError as e:  # refused, or closed before any response: never accepted
                with load.lock:
                    load.unanswered.append((rid, type(e).__name__))
                time.sleep(0.01)
                continue
            with load.lock:
                if r.status_code == 200 and r.json()["outputs"][0]["shape"] == [ROWS, OUT]:
                    load.ok.add(rid)
                else:
                    load.bad.append((rid, r.status_code, r.text[:200]))
    finally:
        client.close()


ACCESS = re.compile(r'"POST /v2/models/\w+/infer\?rid=(w\d+-\d+) HTTP/1\.1" (\d+)')


def test_docker_stop_under_load_fails_no_accepted_request(built: Built) -> None:
    # Access log on: the server's own record of every request it took, each tagged with the client's id.
    cid, url = built.start("drain", "-e", "MODELSTACK_SERVING_ACCESS_LOG=true")
    body = json.dumps(infer_body(np.random.default_rng(2).standard_normal((ROWS, IN)).astype(np.float32))).encode()
    load, stop = Load(), threading.Event()
    workers = [threading.Thread(target=client_loop, args=(url, i, body, stop, load), daemon=True) for i in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(3.0)
        with load.lock:
            before_stop = len(load.ok)
        t = time.monotonic()
        built.docker("stop", "--time", "30", cid, timeout=60)
        stop_s = time.monotonic() - t
        time.sleep(0.3)  # clients meet the closed port (refused) after the container is gone
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=45)
    assert not any(w.is_alive() for w in workers), "a load client hung"

    state = json.loads(built.docker("inspect", cid).stdout)[0]["State"]
    logs = built.docker.logs(cid)
    assert state["ExitCode"] == 0 and not state["OOMKilled"], f"exit {state['ExitCode']}:\n{logs[-3000:]}"
    assert stop_s < 30, f"docker stop took {stop_s:.1f}s: the drain hit the kill timeout"

    assert not load.hung, load.hung[:5]
    assert not load.bad, f"{len(load.bad)} requests answered with an error: {load.bad[:5]}"
    assert before_stop >= 20, f"only {before_stop} requests completed before the stop: no real load"

    # Every request the server accepted was answered 200 and reached its client; the requests that got no
    # response are exactly those the server never saw (connections refused or closed after the drain began).
    served = dict(ACCESS.findall(logs))
    assert served, f"no access log lines:\n{logs[-3000:]}"
    assert set(served.values()) == {"200"}, {k: v for k, v in served.items() if v != "200"}
    assert set(served) == load.ok, (
        f"accepted but not delivered: {sorted(set(served) - load.ok)[:5]}; "
        f"delivered but not logged: {sorted(load.ok - set(served))[:5]}")
    assert not {rid for rid, _ in load.unanswered} & set(served)

    # The stop really came mid-load: requests were still being answered after SIGTERM reached the server.
    lines = logs.splitlines()
    sigterm_at = next(i for i, line in enumerate(lines) if "SIGTERM" in line)
    drained = [line for line in lines[sigterm_at:] if ACCESS.search(line)]
    assert drained, f"no request was in flight at SIGTERM:\n{logs[-3000:]}"
    assert "Finished server process" in logs
    kinds = sorted({kind for _, kind in load.unanswered})
    print(f"drain: {len(load.ok)} answered 200 ({len(drained)} after SIGTERM), "
          f"{len(load.unanswered)} refused/closed before acceptance {kinds}, docker stop {stop_s:.2f}s")
