"""A build's progress reaches the engine: a real gRPC server speaking the engine's Log service stands in
for `pulumi up` (under the real engine: e2e/test_local_stack.py)."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import engine_pb2_grpc

from artifacts.engine_log import engine_address, progress_logger


class Engine(engine_pb2_grpc.EngineServicer):
    def __init__(self) -> None:
        self.messages: list[tuple[int, str, str]] = []

    def Log(self, request, context):
        self.messages.append((request.severity, request.message, request.urn))
        return empty_pb2.Empty()


@pytest.fixture()
def engine():
    servicer = Engine()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    engine_pb2_grpc.add_EngineServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_progress_lines_reach_the_engine_as_info_messages(engine):
    servicer, address = engine
    say = progress_logger("OptimizedModel digits", address)
    assert say is not None
    for stage in ("load", "prune", "finetune: step 100/1000, loss 0.04"):
        say(stage)
    assert [m for _, m, _ in servicer.messages] == ["OptimizedModel digits: load", "OptimizedModel digits: prune",
                                                    "OptimizedModel digits: finetune: step 100/1000, loss 0.04"]
    assert {severity for severity, _, _ in servicer.messages} == {1}  # INFO


def test_the_engine_address_is_the_plugins_first_loopback_argument():
    assert engine_address(["python -m pulumi.dynamic", "127.0.0.1:40123"]) == "127.0.0.1:40123"
    assert engine_address(["x", "--flag", "[::1]:9"]) == "[::1]:9"
    assert engine_address(["pytest", "tests/artifacts"]) is None
    assert engine_address(["x", "10.0.0.5:80"]) is None  # the engine listens on loopback only


def test_no_engine_no_messages_and_a_gone_engine_fails_nothing():
    assert engine_address() is None and progress_logger("m") is None  # pytest was not started by an engine
    say = progress_logger("m", "127.0.0.1:9")  # nothing listens there
    assert say is not None
    say("load")  # dropped, not raised: progress never fails a build
