"""Fixtures: model directories, in-process apps, and real server processes stopped by pid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import models
from tests.serving.server import ServerProcess


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    models.write_model_dir(models.linear_model()[0], root / "linear", "linear")
    models.write_model_dir(models.multi_model(), root / "multi", "multi")
    models.write_model_dir(models.fixed_model(), root / "fixed", "fixed")
    models.write_model_dir(models.strings_model(), root / "strings", "strings")
    models.write_model_dir(models.heavy_model(width=1024, layers=32), root / "slow", "slow")
    models.write_model_dir(models.digits_cnn_onnx(), root / "digits", "digits")
    return root


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """Factory: start_server(model_dir, **settings) -> ready ServerProcess; all are stopped at teardown."""
    started: list[ServerProcess] = []

    def start(model_dir: Path, **env: object) -> ServerProcess:
        server = ServerProcess(model_dir, tmp_path / f"server-{len(started)}.log", **env)
        started.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
