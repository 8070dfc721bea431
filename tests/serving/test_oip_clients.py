"""The Open Inference Protocol's other forms, driven by a client someone else wrote (Triton's tritonclient):
REST with the binary tensor data extension and the v2 gRPC service must give the answers JSON REST gives,
on a real server process; bad input gets INVALID_ARGUMENT / 400 naming the tensor, never a 5xx or a crash.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb  # Triton's messages: the same wire format as ours
from tritonclient.utils import InferenceServerException

from tests.serving.server import REPO, ServerProcess, metric

MODELS = ["linear", "multi", "strings", "digits"]


@pytest.fixture(scope="module")
def servers(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("oip")
    started = {name: ServerProcess(model_root / name, logs / f"{name}.log", grpc_port=0) for name in MODELS}
    try:
        for server in started.values():
            server.wait_ready()
            assert server.grpc_port, server.logs()
        yield started
    finally:
        for server in started.values():
            server.stop()


def rows(name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two rows of valid input for each test model."""
    if name == "linear":
        return {"x": rng.standard_normal((2, 16)).astype(np.float32)}
    if name == "digits":
        return {"image": rng.standard_normal((2, 1, 8, 8)).astype(np.float32)}
    if name == "multi":
        return {
            "ids": rng.integers(0, 10, (2, 3)).astype(np.int64),
            "mask": rng.integers(0, 2, (2, 3)).astype(bool),
            "half": rng.standard_normal((2, 2)).astype(np.float16),
        }
    return {"text": np.array([["héllo", ""], ["a b", "ünïcode ✓"]], dtype=object)}


DATATYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "bool": "BOOL", "object": "BYTES"}


def json_answer(server: ServerProcess, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = [
        {"name": k, "shape": list(v.shape), "datatype": DATATYPES[v.dtype.name], "data": v.ravel().tolist()}
        for k, v in feeds.items()
    ]
    r = httpx.post(f"{server.url}/v2/models/{name}/infer", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 200, r.text
    answer = {}
    for out in r.json()["outputs"]:
        dtype = object if out["datatype"] == "BYTES" else {v: k for k, v in DATATYPES.items()}[out["datatype"]]
        answer[out["name"]] = np.array(out["data"], dtype=dtype).reshape(out["shape"])
    return answer


def triton_inputs(module: Any, feeds: dict[str, np.ndarray], **binary: bool) -> list[Any]:
    inputs = []
    for k, v in feeds.items():
        tensor = module.InferInput(k, list(v.shape), DATATYPES[v.dtype.name])
        tensor.set_data_from_numpy(v, **binary)
        inputs.append(tensor)
    return inputs


def same(got: np.ndarray, want: np.ndarray) -> None:
    if want.dtype == object:  # BYTES come back as bytes from tritonclient, as str over JSON
        got = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(got)
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", MODELS)
def test_binary_rest_and_grpc_answer_what_json_answers(servers: dict[str, ServerProcess], name: str) -> None:
    server = servers[name]
    feeds = rows(name, np.random.default_rng(7))
    want = json_answer(server, name, feeds)

    http = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    binary = http.infer(name, triton_inputs(triton_http, feeds, binary_data=True))  # outputs in binary too
    assert binary.get_response()["outputs"][0]["parameters"]["binary_data_size"] > 0
    asked = [triton_http.InferRequestedOutput(o, binary_data=False) for o in want]
    mixed = http.infer(name, triton_inputs(triton_http, feeds, binary_data=False), outputs=asked)
    rpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    over_grpc = rpc.infer(name, triton_inputs(triton_grpc, feeds), request_id="r-1")
    assert over_grpc.get_response().id == "r-1"
    for output, expected in want.items():
        same(binary.as_numpy(output), expected)
        same(mixed.as_numpy(output), expected)
        same(over_grpc.as_numpy(output), expected)


def test_health_and_metadata_agree_across_forms(servers: dict[str, ServerProcess]) -> None:
    server = servers["multi"]
    rest = httpx.get(f"{server.url}/v2/models/multi", timeout=5).json()
    rpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert rpc.is_server_live() and rpc.is_server_ready() and rpc.is_model_ready("multi")
    meta = rpc.get_model_metadata("multi", as_json=True)
    for side in ("inputs", "outputs"):
        got = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[side]]
        assert got == [(t["name"], t["datatype"], t["shape"]) for t in rest[side]]
    assert "binary_tensor_data" in rpc.get_server_metadata().extensions
    http = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert http.is_server_ready() and "binary_tensor_data" in http.get_server_metadata()["extensions"]
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND.*unknown model"):
        rpc.get_model_metadata("nope")


def test_client_errors_name_the_tensor(servers: dict[str, ServerProcess]) -> None:
    server = servers["linear"]
    wrong = {"x": np.zeros((2, 3), np.float32)}
    rpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*input 'x': shape \[2, 3\]"):
        rpc.infer("linear", triton_inputs(triton_grpc, wrong))
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        rpc.infer("nope", triton_inputs(triton_grpc, rows("linear", np.random.default_rng(0))))
    http = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    with pytest.raises(InferenceServerException, match=r"input 'x': shape \[2, 3\]") as raised:
        http.infer("linear", triton_inputs(triton_http, wrong, binary_data=True))
    assert raised.value.status() == "400"


ROW = np.full((1, 16), 0.5, np.float32).tobytes()
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def x(**changes: Any) -> Any:
    """The linear model's input tensor, with ``changes``."""
    return pb.ModelInferRequest.InferInputTensor(**{"name": "x", "datatype": "FP32", "shape": [1, 16], **changes})


def fp32(values: list[float]) -> Any:
    return pb.InferTensorContents(fp32_contents=values)


def infer(**fields: Any) -> bytes:
    fields.setdefault("model_name", "linear")
    fields.setdefault("inputs", [x()])
    fields.setdefault("raw_input_contents", [ROW])
    return pb.ModelInferRequest(**fields).SerializeToString()


# (id, serialized ModelInferRequest, expected code, words the message must contain)
GRPC_CASES: list[tuple[str, bytes, grpc.StatusCode, str]] = [
    ("not a protobuf message", b"\xff\xff\xff\xff", INVALID, "not a valid"),
    ("unknown model", infer(model_name="nope"), NOT_FOUND, "unknown model"),
    ("unknown version", infer(model_version="7"), NOT_FOUND, "version"),
    ("no inputs", infer(inputs=[], raw_input_contents=[]), INVALID, "inputs"),
    ("unknown input", infer(inputs=[x(name="z")]), INVALID, "unknown input"),
    ("unknown datatype", infer(inputs=[x(datatype="FLOAT")]), INVALID, "unknown datatype"),
    ("wrong datatype", infer(inputs=[x(datatype="FP64")]), INVALID, "expects FP32"),
    ("shape mismatch", infer(inputs=[x(shape=[1, 8])]), INVALID, "does not match"),
    ("bytes short of shape x dtype", infer(raw_input_contents=[ROW[:60]]), INVALID, "needs 64"),
    ("bytes beyond shape x dtype", infer(raw_input_contents=[ROW + b"\0" * 4]), INVALID, "needs 64"),
    ("raw entries vs inputs", infer(raw_input_contents=[ROW, ROW]), INVALID, "2 entries for 1"),
    ("no data at all", infer(raw_input_contents=[]), INVALID, "elements"),
    ("huge shape", infer(inputs=[x(shape=[10**12, 16])]), INVALID, "elements"),
    ("NaN", infer(raw_input_contents=[np.full((1, 16), np.nan, np.float32).tobytes()]), INVALID, "NaN"),
    ("contents and raw both", infer(inputs=[x(contents=fp32([0.5] * 16))]), INVALID, "both"),
    ("contents too short", infer(inputs=[x(contents=fp32([0.5] * 3))], raw_input_contents=[]), INVALID, "3 elements"),
    ("unknown output", infer(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="q")]), INVALID, "output"),
]


def raw_call(server: ServerProcess, body: bytes) -> tuple[grpc.StatusCode, str, bytes | None]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
        try:
            return grpc.StatusCode.OK, "", call(body, timeout=10)
        except grpc.RpcError as e:
            return e.code(), e.details() or "", None


def test_malformed_grpc_requests_never_internal(servers: dict[str, ServerProcess]) -> None:
    server = servers["linear"]
    for case_id, body, code, words in GRPC_CASES:
        got, details, _ = raw_call(server, body)
        assert got == code, (case_id, got, details)
        assert words.lower() in details.lower(), (case_id, details)
    # Typed contents (what KServe's clients may send) work as raw bytes do.
    got, details, reply = raw_call(server, infer(inputs=[x(contents=fp32([0.5] * 16))], raw_input_contents=[]))
    assert got == grpc.StatusCode.OK, details
    assert reply == raw_call(server, infer())[2]
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert metric(text, "modelstack_requests_total", endpoint="grpc", code="400") >= len(GRPC_CASES) - 3
    assert metric(text, "modelstack_requests_total", endpoint="grpc", code="500") == 0
    assert server.proc.poll() is None and "Traceback" not in server.logs()


def _mutate(data: st.DataObject, body: bytes) -> bytes:
    """Truncate, overwrite, insert or drop bytes of a valid body: what a broken client or proxy sends."""
    kind = data.draw(st.sampled_from(["truncate", "overwrite", "insert", "drop"]))
    at = data.draw(st.integers(0, len(body)))
    if kind == "truncate":
        return body[:at]
    if kind == "overwrite":
        return body[:at] + data.draw(st.binary(min_size=1, max_size=8)) + body[at + 8 :]
    if kind == "insert":
        return body[:at] + data.draw(st.binary(min_size=1, max_size=8)) + body[at:]
    return body[:at] + body[at + data.draw(st.integers(1, 8)) :]


def test_fuzzed_binary_and_grpc_requests_never_5xx(servers: dict[str, ServerProcess]) -> None:
    server = servers["multi"]
    feeds = rows("multi", np.random.default_rng(1))
    inputs = triton_inputs(triton_http, feeds, binary_data=True)
    rest_body, json_size = triton_http.InferenceServerClient.generate_request_body(inputs)
    grpc_body = pb.ModelInferRequest(
        model_name="multi",
        inputs=[x(name=k, datatype=DATATYPES[v.dtype.name], shape=v.shape) for k, v in feeds.items()],
        raw_input_contents=[v.tobytes() for v in feeds.values()],
    ).SerializeToString()
    ok_codes = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    client = httpx.Client(base_url=server.url, timeout=10)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        body = _mutate(data, rest_body)
        header = str(data.draw(st.one_of(st.just(json_size), st.integers(0, len(body) + 16))))
        r = client.post("/v2/models/multi/infer", content=body, headers={"Inference-Header-Content-Length": header})
        assert r.status_code in (200, 400), r.text
        assert r.status_code == 200 or r.json()["error"]
        code, details, _ = raw_call(server, _mutate(data, grpc_body))
        assert code in ok_codes, (code, details)

    try:
        check()
    finally:
        client.close()
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert metric(text, "modelstack_requests_total", code="500") == 0
    assert server.proc.poll() is None and "Traceback" not in server.logs()


def test_committed_messages_are_what_the_proto_gives() -> None:
    check = subprocess.run([sys.executable, "scripts/protos.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
