"""A dynamic provider as the engine runs it, for tests: `python -m pulumi.dynamic` serving gRPC in its own
process, the provider dill-pickled into the `__provider` property."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from pulumi.dynamic import ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import provider_pb2_grpc
from pulumi.runtime.sync_await import _sync_await

from components.optimized_model import OptimizedModelProvider


class EngineProvider:
    """The provider as the engine runs it: `python -m pulumi.dynamic` serving gRPC, the provider
    dill-pickled into the `__provider` property, started from a directory that is not the project."""

    def __init__(self, cwd: Path, provider: ResourceProvider | None = None):
        self.provider = provider or OptimizedModelProvider()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.dynamic"], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        port = int(self.proc.stdout.readline())  # the plugin handshake: its port on stdout
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)

    def create_async(self, props: dict):
        request = proto.provider_pb2.CreateRequest(
            urn="urn:pulumi:test::modelstack::pulumi-python:dynamic:Resource::model",
            properties=_sync_await(rpc.serialize_properties(
                {**props, "__provider": serialize_provider(self.provider)}, {})),
        )
        return self.stub.Create.future(request, timeout=300)

    def create(self, props: dict) -> dict:
        return rpc.deserialize_properties(self.create_async(props).result().properties)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.kill()
