"""A real Docker engine for the container test: start it, make the base image and the wheelhouse, build, run.

No registry can be reached here, so nothing is pulled: the base image comes from scripts/base-image.sh
(debootstrap + ``docker import``, cached in the engine by a content key), the wheels from a host-side
``pip download`` (scripts/wheelhouse.py, kept while the image lock is unchanged), both made by `make test`
before the tests run (`make base-image`, `make wheelhouse`), and the build
uses BuildKit, which builds only the stages the target needs (the classic builder would also build
the GPU stage and try to pull the CUDA base image).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts import wheelhouse as wheels

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run scripts/install-system-deps.sh (installs Debian's docker.io and debootstrap)"


def run(cmd: list[str], *, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None,
        stdout_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure fail the test with its output (or the tail of its log file)."""
    full_env = {**os.environ, **(env or {})}
    if stdout_path is not None:
        with stdout_path.open("w") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=full_env)
        output = stdout_path.read_text(errors="replace")
        proc = subprocess.CompletedProcess(proc.args, proc.returncode, output, "")
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}", pytrace=False)
    return proc


def docker_cli() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail(f"no docker CLI on PATH: {INSTALL_HINT}", pytrace=False)
    return docker


def ensure_engine() -> bool:
    """Make ``docker info`` work, starting Debian's dockerd if needed. Returns whether this call started it."""
    docker = docker_cli()
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0:
        return False
    proc = run([str(REPO / "scripts" / "start-dockerd.sh")], timeout=120, check=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/start-dockerd.sh failed ({INSTALL_HINT} first):\n{proc.stderr}{proc.stdout}",
                    pytrace=False)
    return proc.stdout.strip() == "started"


def base_image() -> str:
    """The debootstrap base image's reference, which `make base-image` builds (debootstrap reaches Debian's
    mirror: installing may, a test may not)."""
    proc = run([str(REPO / "scripts" / "base-image.sh"), "--cached"], timeout=60, check=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/base-image.sh failed:\n{proc.stderr}{proc.stdout}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def wheelhouse() -> Path:
    """Binary wheels for the CPU image (cp311, manylinux x86_64), which `make wheelhouse` downloads."""
    try:
        return wheels.require()
    except SystemExit as exc:
        pytest.fail(str(exc), pytrace=False)


def build_command() -> tuple[list[str], dict[str, str]]:
    """A BuildKit build that leaves the image in the engine: buildx when installed, else a pre-23 CLI's
    built-in BuildKit client (Debian bookworm's docker.io, 20.10), with DOCKER_BUILDKIT=1."""
    docker = docker_cli()
    if subprocess.run([docker, "buildx", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "buildx", "build", "--load"], {}
    for cli in dict.fromkeys([docker, "/usr/bin/docker"]):
        if not Path(cli).is_file():
            continue
        version = subprocess.run([cli, "version", "-f", "{{.Client.Version}}"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 23:
            return [cli, "build"], {"DOCKER_BUILDKIT": "1"}
    pytest.fail(f"no docker CLI that builds with BuildKit (no buildx, and {docker} is 23 or newer, which needs "
                f"buildx for BuildKit): install docker-buildx, or {INSTALL_HINT}", pytrace=False)


@dataclass
class Docker:
    """The docker CLI, with everything this test run creates labelled so teardown can remove it."""

    run_id: str
    cli: str = field(default_factory=docker_cli)
    images: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"modelstack.test={self.run_id}"

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.cli, *args], timeout=timeout, check=check)

    def build(self, context: Path, tag: str, log: Path, **build_args: str) -> None:
        cmd, env = build_command()
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        self.images.append(tag)
        run([*cmd, "--progress=plain", "--label", self.label, *args, "-t", tag, str(context)],
            env=env, timeout=600, stdout_path=log)

    def run_detached(self, image: str, name: str, *args: str) -> str:
        return self("run", "-d", "--name", name, "--label", self.label, *args, image).stdout.strip()

    def wait_exit(self, container: str, timeout: float = 60) -> int:
        return int(self("wait", container, timeout=timeout).stdout.strip())

    def logs(self, container: str) -> str:
        proc = self("logs", "--timestamps", container, check=False)
        lines = (proc.stdout + proc.stderr).splitlines()
        return "\n".join(sorted(lines))  # stdout and stderr merged in time order (RFC 3339 nanosecond stamps)

    def host_port(self, container: str, port: int = 8080) -> int:
        mapping = self("port", container, f"{port}/tcp").stdout.split()[0]  # 127.0.0.1:NNNNN
        assert mapping.startswith("127.0.0.1:"), mapping
        return int(mapping.rsplit(":", 1)[1])

    def sweep(self) -> None:
        """Remove exited containers left by earlier runs that were killed before their teardown."""
        ids = self("ps", "-aq", "--filter", "label=modelstack.test", "--filter", "status=exited",
                   check=False).stdout.split()
        if ids:
            self("rm", "-v", *ids, check=False)

    def cleanup(self) -> None:
        ids = self("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
        if ids:
            self("rm", "-f", "-v", *ids, check=False)
        for tag in self.images:
            self("rmi", "-f", tag, check=False)
        dangling = self("images", "-q", "--filter", "dangling=true", "--filter", f"label={self.label}",
                        check=False).stdout.split()
        if dangling:
            self("rmi", "-f", *dangling, check=False)


def wait_ready(url: str, container: str, docker: Docker, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", container).stdout.split()
        if state[0] != "true":
            pytest.fail(f"container exited with {state[1]} before ready:\n{docker.logs(container)}", pytrace=False)
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"container not ready after {timeout}s:\n{docker.logs(container)}", pytrace=False)
