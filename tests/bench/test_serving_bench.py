"""The serving benchmark's pure parts: percentiles, the overhead report, and the JSON REST request form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.serving.forms import FORMS, BadResponse, BinaryRest, Grpc, JsonRest
from bench.serving.measure import Percentiles, latency
from bench.serving.overhead import overhead_report
from tests.bench.conftest import RecordingHandler


def test_percentiles_are_of_the_samples_in_ms() -> None:
    p = Percentiles.of([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p.p50 == pytest.approx(50.5)
    assert p.p99 == pytest.approx(99.01)


def test_overhead_report_prints_measured_percentiles_and_no_difference_of_p99s() -> None:
    session, served, floor = Percentiles(0.05, 1.2), Percentiles(0.33, 0.4), Percentiles(0.1, 0.25)
    text = "\n".join(overhead_report("digits, JSON REST", session, served, floor, 86.4))
    assert "session.run in-process           0.050      1.200" in text
    assert "server round trip                0.330      0.400" in text
    assert "bare uvicorn floor               0.100      0.250" in text
    assert "overhead p50, difference of medians (server - session.run): 0.280 ms" in text
    assert "(target <= 0.5 ms: met)" in text
    # the tail: both p99s side by side, never their difference (0.4 - 1.2 = -0.8 is not a percentile)
    assert "tail: server p99 0.400 ms, session.run p99 1.200 ms" in text
    assert "-0.800" not in text
    assert "session.run p99 + 2 ms = 3.200 ms: met" in text
    assert "our code p50, difference of medians (server - floor - session.run): 0.180 ms" in text
    assert text.endswith("server RSS: 86 MB")


def test_overhead_report_without_a_floor_and_with_missed_targets() -> None:
    lines = overhead_report("t", Percentiles(1.0, 2.0), Percentiles(2.0, 5.0), None, 100)
    text = "\n".join(lines)
    assert "floor" not in text
    assert "(target <= 0.5 ms: MISSED)" in text
    assert "= 4.000 ms: MISSED" in text


def test_json_rest_encodes_the_v2_request() -> None:
    x = np.arange(6, dtype=np.int64).reshape(1, 6)
    request = FORMS["rest-json"].encode("text", {"input_ids": x})
    assert request.path == "/v2/models/text/infer"
    assert request.headers == {"Content-Type": "application/json"}
    assert json.loads(request.body) == {
        "inputs": [{"name": "input_ids", "shape": [1, 6], "datatype": "INT64", "data": [0, 1, 2, 3, 4, 5]}]
    }


def test_http_round_trips_time_each_request_and_reject_failures(server: tuple[int, type[RecordingHandler]]) -> None:
    port, handler = server
    form = JsonRest()
    request = form.encode("m", {"x": np.zeros((1, 2), np.float32)})
    times = latency(form, port, request, 5, warmup=2)
    assert len(times) == 5 and all(t > 0 for t in times)
    handler.status = 503
    with pytest.raises(BadResponse, match="503"):
        latency(form, port, request, 1, warmup=0)


def test_binary_and_grpc_forms_carry_the_same_tensor_as_json() -> None:
    x = np.arange(6, dtype=np.int64).reshape(1, 6)
    binary = BinaryRest().encode("m", {"ids": x})
    size = int(binary.headers["Inference-Header-Content-Length"])
    head = json.loads(binary.body[:size])
    assert head["inputs"] == [
        {"name": "ids", "shape": [1, 6], "datatype": "INT64", "parameters": {"binary_data_size": 48}}
    ]
    assert head["parameters"] == {"binary_data_output": True}
    assert np.array_equal(np.frombuffer(binary.body[size:], np.int64).reshape(1, 6), x)
    rpc = Grpc().encode("m", {"ids": x})
    from serving.grpc_service import pb

    message = pb.ModelInferRequest.FromString(rpc.body)
    assert (message.model_name, message.inputs[0].name, list(message.inputs[0].shape)) == ("m", "ids", [1, 6])
    assert np.array_equal(np.frombuffer(message.raw_input_contents[0], np.int64).reshape(1, 6), x)
    assert rpc.path == "/inference.GRPCInferenceService/ModelInfer"
