"""The benchmarks' load generator: real wrk against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import pytest

from bench.load_generator import _varint, parse, parse_ghz, wrk
from tests.bench.conftest import RecordingHandler


def test_posts_the_body_and_reports_rate_and_latency(server: tuple[int, type[RecordingHandler]]) -> None:
    port, handler = server
    result = wrk(port, "/v2/models/m/infer", b'{"inputs": []}', connections=2, seconds=1)
    # wrk counts completed requests; the ones in flight when the window closes reached the server too
    assert 0 < result.requests <= len(handler.seen) <= result.requests + 2
    assert {(path, ctype, body) for path, ctype, body in handler.seen} == {
        ("/v2/models/m/infer", "application/json", b'{"inputs": []}')
    }
    assert 0.5 * result.requests <= result.rps <= 2 * result.requests  # a 1 s window
    assert 0 < result.p50_ms <= result.p99_ms


def test_non_2xx_responses_are_an_error_not_a_figure(server: tuple[int, type[RecordingHandler]]) -> None:
    port, handler = server
    handler.status = 503
    with pytest.raises(RuntimeError, match="non-2xx responses under load"):
        wrk(port, "/", b"{}", connections=2, seconds=1)


def test_parse_reads_units_and_rejects_socket_errors() -> None:
    out = """Running 2s test @ http://127.0.0.1:1/
  Latency Distribution
     50%  750.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.50s
  1234 requests in 2.00s, 100.00KB read
Requests/sec:    617.00
"""
    result = parse(out)
    assert (result.requests, result.rps, result.p50_ms, result.p99_ms) == (1234, 617.0, 0.75, 1500.0)
    with pytest.raises(RuntimeError, match="socket errors"):
        parse(out + "  Socket errors: connect 0, read 3, write 0, timeout 0\n")


def test_posts_the_forms_own_headers(server: tuple[int, type[RecordingHandler]]) -> None:
    """The binary tensor form sends its own Content-Type and Inference-Header-Content-Length."""
    port, handler = server
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "2"}
    wrk(port, "/v2/models/m/infer", b"{}\x00\x01", connections=1, seconds=1, headers=headers)
    assert {(ctype, body) for _, ctype, body in handler.seen} == {("application/octet-stream", b"{}\x00\x01")}
    assert set(handler.binary_headers) == {"2"}


def test_parse_ghz_reads_rate_and_latency_and_rejects_failed_calls() -> None:
    report = {
        "rps": 812.5, "statusCodeDistribution": {"OK": 1625, "Unavailable": 3},
        "errorDistribution": {"rpc error: code = Unavailable desc = transport is closing": 3},
        "latencyDistribution": [{"percentage": 50, "latency": 750_000}, {"percentage": 99, "latency": 1_500_000_000}],
    }  # fmt: skip
    result = parse_ghz(report)
    assert (result.requests, result.rps, result.p50_ms, result.p99_ms) == (1625, 812.5, 0.75, 1500.0)
    report["errorDistribution"] = {"rpc error: code = InvalidArgument desc = input 'x'": 1}
    with pytest.raises(RuntimeError, match="failed calls under load"):
        parse_ghz(report)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 602_142, 2**31])
def test_ghz_message_lengths_are_protobuf_varints(size: int) -> None:
    """ghz reads -B as length-delimited messages first: the prefix must be protobuf's own varint."""
    from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]

    prefix = _varint(size)
    assert _DecodeVarint(prefix + b"rest", 0) == (size, len(prefix))
