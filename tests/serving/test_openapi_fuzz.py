"""Schemathesis against the server's own OpenAPI document, on a real server process.

Every generated request (valid per the schema or deliberately not) must get a documented status with a
conforming body and never a 5xx. ``positive_data_acceptance`` is left out: the schema cannot say that
``data`` must hold exactly prod(shape) numbers, so schema-valid tensors can rightly be refused with 400.
(Driven with hypothesis directly: schemathesis' pytest plugin does not load under pytest 9.)
"""

from __future__ import annotations

from pathlib import Path

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.serving.server import ServerProcess, metric


def test_openapi_conformance(model_root: Path, tmp_path: Path) -> None:
    server = ServerProcess(model_root / "multi", tmp_path / "server.log")
    try:
        server.wait_ready()
        schema = schemathesis.openapi.from_url(f"{server.url}/v2/openapi.json")
        tested = []
        for result in schema.get_all_operations():
            operation = result.ok()
            modes = [GenerationMode.POSITIVE]
            if operation.method.upper() == "POST" or "{" in operation.path:  # something to get wrong
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                def check(case: schemathesis.Case) -> None:
                    case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=10)

                check()
            tested.append(operation.label)
        assert "POST /v2/models/{model_name}/infer" in tested and len(tested) >= 8
        assert server.proc.poll() is None
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert metric(text, "modelstack_requests_total", endpoint="infer") >= 30  # the fuzzer reached inference
        assert metric(text, "modelstack_requests_total", code="500") == 0
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.logs()
