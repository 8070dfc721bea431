"""Build progress on `pulumi up`'s display.

A Python dynamic provider's process is not connected to the engine's log (pulumi/pulumi#6065), so a
build's stages and its fine-tuning steps would go unseen for minutes. The engine starts every provider
plugin with its own address as the first argument, the channel providers log through: the build sends
its lines there itself, with the engine's wire protocol (the SDK's generated gRPC stubs; no Pulumi
programming model here). Without that address (tests, a build called directly) nothing is sent.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable

# The engine listens on loopback; anything else in argv is not its address.
ENGINE_ADDRESS = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\]):\d{1,5}$")
TIMEOUT_S = 5.0


def engine_address(argv: list[str] | None = None) -> str | None:
    return next((a for a in (sys.argv if argv is None else argv)[1:] if ENGINE_ADDRESS.match(a)), None)


def progress_logger(prefix: str, address: str | None = None) -> Callable[[str], None] | None:
    """A `progress(stage)` callback that sends "prefix: stage" to the engine as an info message, or None
    when this process was not started by the engine. A failed send is dropped: progress never fails a build."""
    address = address or engine_address()
    if address is None:
        return None
    import grpc
    from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc

    stub = engine_pb2_grpc.EngineStub(grpc.insecure_channel(address))

    def send(stage: str) -> None:
        with contextlib.suppress(grpc.RpcError):
            stub.Log(engine_pb2.LogRequest(severity=engine_pb2.INFO, message=f"{prefix}: {stage}"), timeout=TIMEOUT_S)

    return send
