"""Entry point: ``python -m serving --model DIR --port N [--name NAME]``.

Exit codes: 0 after a clean (drained) shutdown, 1 when the model cannot be served (missing files, digest
mismatch, failed warm-up), 2 on bad settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import ValidationError

from serving import __version__
from serving.app import ServerState, create_app
from serving.errors import ModelError
from serving.model import Model
from serving.settings import ENV_PREFIX, Settings

log = logging.getLogger("serving")


class DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM handled the Kubernetes way.

    On SIGTERM readiness turns false at once; after ``shutdown_delay_s`` uvicorn stops accepting connections,
    lets in-flight requests finish (up to ``graceful_timeout_s``), runs the lifespan shutdown (which drains
    the batch queue) and the process exits 0. uvicorn alone would re-raise SIGTERM at the end (exit 143).
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, shutdown_delay_s: float):
        super().__init__(config)
        self.state = state
        self.shutdown_delay_s = shutdown_delay_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            return
        first = not self.state.draining
        self.state.begin_drain()
        log.info("SIGTERM: not ready; draining in-flight requests")
        if first and self.shutdown_delay_s > 0:
            timer = threading.Timer(self.shutdown_delay_s, self._exit)
            timer.daemon = True
            timer.start()
        else:
            self._exit()

    def _exit(self) -> None:
        self.should_exit = True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m serving",
        description=f"Serve DIR/model.onnx over the Open Inference Protocol v2. Every setting can also be "
        f"given as an environment variable {ENV_PREFIX}<NAME> (see serving/settings.py); flags win.",
    )
    p.add_argument("--model", dest="model_dir", help="directory with model.onnx and report.json")
    p.add_argument("--port", type=int, help="TCP port (0: any free port)")
    p.add_argument("--grpc-port", type=int, help="also serve gRPC (v2 GRPCInferenceService) on this port")
    p.add_argument("--name", dest="model_name", help="model name (default: report.json 'name')")
    p.add_argument("--host", help="address to listen on")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    except ValidationError as e:
        print(f"invalid settings: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)
    if unknown:  # most likely a typo in the Deployment's ConfigMap
        log.warning("ignoring unknown settings %s", ", ".join(unknown))
    log.info("serving %s version %s", Path(__file__).resolve().parent, __version__)
    try:  # verify the digest and load before opening the port: a bad artifact is never served
        model = Model(settings)
    except ModelError as e:
        log.error("cannot serve: %s", e)
        return 1
    app = create_app(settings, model)
    state: ServerState = app.state.serving
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.set_inheritable(True)
    log.info("listening on %s:%d", settings.host, sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=max(1, round(settings.graceful_timeout_s)),
        server_header=False,
        proxy_headers=False,
    )
    server = DrainingServer(config, state, settings.shutdown_delay_s)
    try:
        server.run(sockets=[sock])
    except SystemExit as e:  # uvicorn exits 3 when the lifespan (warm-up) fails; it logged why
        return 1 if e.code == uvicorn.config.STARTUP_FAILURE else int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
