"""A real ``python -m serving`` process on 127.0.0.1: batching, metrics, overload, SIGTERM drain, abuse."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.serving import models
from tests.serving.corpus import BINARY_CASES, CASES
from tests.serving.server import ServerProcess, metric

Start = Callable[..., ServerProcess]


def rows_request(name: str, rows: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}


def concurrently(n: int, fn: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def test_dynamic_batching_and_metrics(model_root: Path, start_server: Start) -> None:
    # One compute worker waits out the delay for company (with a second one free it would run each at once).
    server = start_server(model_root / "linear", max_batch_size=8, max_queue_delay_ms=200, compute_workers=1)
    _, w, b = models.linear_model()
    xs = [np.full((1, 16), i, dtype=np.float32) for i in range(8)]

    def call(i: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v2/models/linear/infer", json=rows_request("x", xs[i]), timeout=10)

    responses = concurrently(8, call)
    for i, r in enumerate(responses):  # each caller gets its own rows back
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]).reshape(1, 4), xs[i] @ w + b, rtol=1e-5)

    assert httpx.post(f"{server.url}/v2/models/linear/infer", content=b"{", timeout=5).status_code == 400
    assert httpx.post(f"{server.url}/v2/models/other/infer", content=b"{}", timeout=5).status_code == 404
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    batches = metric(text, "modelstack_batch_size_count", model="linear")
    rows = metric(text, "modelstack_batch_size_sum", model="linear")
    assert rows == 8 and batches < 8, f"8 concurrent requests ran as {batches} batches"
    assert metric(text, "modelstack_requests_total", model="linear", endpoint="infer", code="200") == 8
    assert metric(text, "modelstack_requests_total", model="linear", endpoint="infer", code="400") == 1
    assert metric(text, "modelstack_requests_total", model="_unknown", endpoint="infer", code="404") == 1
    assert metric(text, "modelstack_request_duration_seconds_count", model="linear", endpoint="infer") == 9
    assert metric(text, "modelstack_queue_duration_seconds_count", model="linear") == 8
    assert metric(text, "modelstack_compute_duration_seconds_count", model="linear") == batches
    assert metric(text, "modelstack_inflight_requests", model="linear") == 0
    assert metric(text, "modelstack_queue_capacity", model="linear") == 256
    assert metric(text, "modelstack_ready", model="linear") == 1
    assert metric(text, "modelstack_model_info", model="linear") == 1
    assert 'le="0.0005"' in text  # buckets sized for the sub-millisecond overhead target
    rss = metric(text, "process_resident_memory_bytes")
    assert 0 < rss < 300e6, f"RSS {rss / 1e6:.0f} MB"


def test_overload_gets_503_with_retry_after(model_root: Path, start_server: Start) -> None:
    server = start_server(model_root / "slow", max_batch_size=1, max_queue_size=1, retry_after_s=2, warmup_runs=1)
    body = json.dumps(rows_request("x", np.ones((64, 1024), dtype=np.float32))).encode()  # ~0.1 s of compute each
    with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=10)) as client:
        responses = concurrently(10, lambda _: client.post("/v2/models/slow/infer", content=body))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "2"
            assert "queue is full" in r.json()["error"]
    assert server.proc.poll() is None


def test_sigterm_drains_in_flight_requests(model_root: Path, start_server: Start) -> None:
    server = start_server(model_root / "slow", max_batch_size=1, shutdown_delay_s=0.5, warmup_runs=1)
    # ~0.4 s of compute each, run one at a time: all four are inside the server long before the first ends,
    # even on a loaded machine.
    body = json.dumps(rows_request("x", np.ones((256, 1024), dtype=np.float32))).encode()
    with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.post, "/v2/models/slow/infer", content=body) for _ in range(4)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until all four are inside the server
            text = client.get("/metrics").text
            if metric(text, "modelstack_inflight_requests", model="slow") == 4:
                break
            time.sleep(0.005)
        else:
            raise AssertionError("requests never became in-flight together")
        t0 = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.1)
        ready = client.get("/v2/health/ready")  # within shutdown_delay_s: still answering, not ready
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert [f.result().status_code for f in futures] == [200] * 4
    assert server.proc.wait(timeout=30) == 0
    assert time.monotonic() - t0 < 30
    assert "Finished server process" in server.logs()


def test_after_sigterm_keep_alive_clients_are_told_to_reconnect(model_root: Path, start_server: Start) -> None:
    # kube-proxy keeps an established connection on its pod after the pod leaves the endpoints: only a
    # `Connection: close` moves a keep-alive client to another pod before this one closes its sockets.
    server = start_server(model_root / "linear", shutdown_delay_s=3, warmup_runs=1)
    body = rows_request("x", np.ones((1, 16), dtype=np.float32))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        before = client.post("/v2/models/linear/infer", json=body)
        assert before.status_code == 200 and before.headers.get("connection") != "close"
        os.kill(server.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2
        while client.get("/v2/health/ready").status_code == 200:  # the signal has arrived once unready
            assert time.monotonic() < deadline
            time.sleep(0.01)
        during = client.post("/v2/models/linear/infer", json=body)
        assert during.status_code == 200 and during.headers["connection"] == "close"
        assert np.allclose(during.json()["outputs"][0]["data"], before.json()["outputs"][0]["data"])
    assert server.proc.wait(timeout=30) == 0


def test_sigterm_without_delay_still_finishes_in_flight(model_root: Path, start_server: Start) -> None:
    server = start_server(model_root / "slow", max_batch_size=1, warmup_runs=1)
    body = json.dumps(rows_request("x", np.ones((256, 1024), dtype=np.float32))).encode()
    with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(client.post, "/v2/models/slow/infer", content=body) for _ in range(2)]
        deadline = time.monotonic() + 10
        while metric(client.get("/metrics").text, "modelstack_inflight_requests", model="slow") < 2:
            assert time.monotonic() < deadline, "requests never became in-flight together"
            time.sleep(0.005)
        os.kill(server.proc.pid, signal.SIGTERM)
        assert [f.result().status_code for f in futures] == [200, 200]
    assert server.proc.wait(timeout=30) == 0


def test_malformed_corpus_never_5xx(model_root: Path, start_server: Start) -> None:
    server = start_server(model_root / "linear", max_body_bytes=1024 * 1024, body_timeout_s=0.5)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for case_id, path, body, status, _ in CASES:
            r = client.post(path, content=body)
            assert r.status_code == status, (case_id, r.text)
            assert "error" in r.json()
        for case_id, header, body, status, _ in BINARY_CASES:
            headers = {"Inference-Header-Content-Length": header}
            r = client.post("/v2/models/linear/infer", content=body, headers=headers)
            assert r.status_code == status, (case_id, r.text)
            assert "error" in r.json()
        r = client.post("/v2/models/linear/infer", content=b"0" * (1024 * 1024 + 1))  # Content-Length over the limit
        assert r.status_code == 413
    status = chunked_upload(server.port, "/v2/models/linear/infer", 3 * 1024 * 1024)
    assert status == 413
    t0 = time.monotonic()
    assert stalled_upload(server.port, "/v2/models/linear/infer") == 408  # sends 10 of 100 bytes, then stalls
    assert time.monotonic() - t0 < 5
    assert server.proc.poll() is None
    ok = rows_request("x", np.ones((1, 16), dtype=np.float32))
    assert httpx.post(f"{server.url}/v2/models/linear/infer", json=ok, timeout=5).status_code == 200
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert metric(text, "modelstack_requests_total", code="500") == 0
    assert "Traceback" not in server.logs()


def stalled_upload(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode() + b'{"inputs":')
        response = sock.recv(65536)
    m = re.match(rb"HTTP/1.1 (\d+)", response)
    assert m, f"no HTTP response: {response[:200]!r}"
    return int(m.group(1))


def chunked_upload(port: int, path: str, size: int) -> int:
    """Send ``size`` bytes with Transfer-Encoding: chunked over a raw socket; return the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"[" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we finished: expected
        response = b""
        try:
            while b"\r\n\r\n" not in response:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
        except ConnectionResetError:
            pass
    m = re.match(rb"HTTP/1.1 (\d+)", response)
    assert m, f"no HTTP response: {response[:200]!r}"
    return int(m.group(1))


def test_no_memory_growth_under_repeated_abuse(model_root: Path, start_server: Start) -> None:
    """Rounds of malformed, oversized and valid requests: RSS settles after the first round."""
    server = start_server(model_root / "linear", max_body_bytes=1024 * 1024)
    ok = json.dumps(rows_request("x", np.ones((64, 16), dtype=np.float32))).encode()
    big = b'{"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [' + b"0.5," * 200_000 + b"0.5]}]}"

    def round_trip(client: httpx.Client) -> None:
        for _ in range(3):
            for _case_id, path, body, status, _ in CASES:
                assert client.post(path, content=body).status_code == status
            assert client.post("/v2/models/linear/infer", content=ok).status_code == 200
            assert client.post("/v2/models/linear/infer", content=big).status_code == 400  # 800 KB for [1, 16]
            assert client.post("/v2/models/linear/infer", content=big * 2).status_code == 413

    def rss() -> float:
        return metric(httpx.get(f"{server.url}/metrics", timeout=5).text, "process_resident_memory_bytes")

    with httpx.Client(base_url=server.url, timeout=10) as client:
        round_trip(client)
        before = rss()
        for _ in range(3):
            round_trip(client)
        after = rss()
    assert after - before < 15e6, f"RSS grew {(after - before) / 1e6:.1f} MB over 3 rounds"
    assert server.proc.poll() is None


def test_tampered_model_is_never_served(model_root: Path, tmp_path: Path) -> None:
    d = models.write_model_dir(models.linear_model()[0], tmp_path / "m", "m")
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:-1] + b"\x01")
    server = ServerProcess(d, tmp_path / "server.log")
    try:
        assert server.proc.wait(timeout=60) == 1
    finally:
        server.stop()
    assert "does not match report.json digest" in server.logs()


def test_failed_warmup_exits_without_becoming_ready(tmp_path: Path) -> None:
    d = models.write_model_dir(models.unrunnable_model(), tmp_path / "m", "m")
    server = ServerProcess(d, tmp_path / "server.log")
    try:
        assert server.proc.wait(timeout=60) == 1
    finally:
        server.stop()
    assert "Application startup failed" in server.logs()


def test_predict_against_real_server(model_root: Path, start_server: Start) -> None:
    server = start_server(model_root / "digits")
    x = np.random.default_rng(0).random((3, 1, 8, 8)).tolist()
    r = httpx.post(f"{server.url}/predict", content=json.dumps({"instances": x}), timeout=10)
    assert r.status_code == 200, r.text
    assert np.array(r.json()["predictions"]).shape == (3, 10)
