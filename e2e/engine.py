"""The pieces the end-to-end test drives: the local cluster's environment, the Pulumi CLI on one stack
(throwaway file backend, passphrase secrets, its own copy of the stack file), kubectl and the registry."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "local-cluster" / "cluster.sh"
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


@dataclass
class Result:
    args: list[str]
    returncode: int
    output: str  # stdout and stderr, interleaved as the user sees them
    seconds: float

    def check(self) -> Result:
        assert self.returncode == 0, f"{' '.join(self.args)} exited {self.returncode}:\n{self.output[-6000:]}"
        return self


def run(args: list[str], env: dict[str, str], timeout: float = 900, stdin: str | None = None,
        cwd: Path = REPO) -> Result:
    start = time.monotonic()
    proc = subprocess.run(args, cwd=cwd, env=env, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return Result(args, proc.returncode, proc.stdout, time.monotonic() - start)


def cluster_env() -> dict[str, str]:
    """The environment `eval "$(local-cluster/cluster.sh env)"` gives a shell."""
    script = f'eval "$({CLUSTER} env)" && env -0'
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True, timeout=60).stdout
    return dict(line.split("=", 1) for line in out.decode().split("\0") if "=" in line)


@dataclass
class Stack:
    """One stack of this project under the real CLI (its config: Pulumi.<name>.yaml in the project)."""

    name: str
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def pulumi(self, *args: str, timeout: float = 900, stdin: str | None = None, timing: str | None = None,
               check: bool = True) -> Result:
        result = run(["pulumi", *args, "--stack", self.name, "--non-interactive"], self.env, timeout, stdin)
        if timing:
            self.timings[timing] = round(result.seconds, 1)
        return result.check() if check else result

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets").output)

    def export(self) -> str:
        return self.pulumi("stack", "export").output


def kubectl(env: dict[str, str], *args: str, check: bool = True) -> Result:
    result = run(["kubectl", *args], env, timeout=120)
    return result.check() if check else result


def kube_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    return json.loads(kubectl(env, *args, "-o", "json").output)


def registry_get(registry: str, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://{registry}{path}", headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def registry_tags(registry: str, repository: str) -> set[str]:
    status, _, body = registry_get(registry, f"/v2/{repository}/tags/list")
    return set(json.loads(body).get("tags") or []) if status == 200 else set()


def manifest_digest(registry: str, repository: str, reference: str) -> str | None:
    """The digest the registry serves for a tag or digest, or None when it serves none."""
    status, headers, _ = registry_get(registry, f"/v2/{repository}/manifests/{reference}", MANIFEST_TYPES)
    return headers.get("Docker-Content-Digest") if status == 200 else None


def copy_project(root: Path) -> None:
    """The project's tracked files (as this checkout has them) in ROOT, committed in a repository of
    its own, with this checkout's venv: a clone whose stacks and files the test may change."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True).stdout
    for name in filter(None, names.split("\0")):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)  # times kept: make finds the venv up to date
    (root / ".venv").symlink_to(REPO / ".venv")
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.com",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.com"}  # fmt: skip
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "the project as tracked"]):
        subprocess.run(["git", *cmd], cwd=root, env=env, check=True, capture_output=True)


def tools_env() -> dict[str, str]:
    """This environment with the tools of tools/build.sh on PATH and its PULUMI_HOME, and no other PULUMI_."""
    out = subprocess.run(["bash", "-c", f'eval "$({REPO}/tools/build.sh)" && env -0'], capture_output=True,
                         check=True, timeout=3600).stdout.decode()  # fmt: skip
    env = dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)
    return {k: v for k, v in env.items() if not k.startswith("PULUMI_") or k == "PULUMI_HOME"}


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    return {**env, **cluster_env(), "CI": "true"}


def pods(env: dict[str, str], namespace: str, app: str) -> list[dict[str, Any]]:
    """The pods of one app (app.kubernetes.io/name) that are not on their way out."""
    items = kube_json(env, "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={app}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def cluster_ip(env: dict[str, str], namespace: str, service: str) -> str:
    return kube_json(env, "get", "service", service, "-n", namespace)["spec"]["clusterIP"]


@contextmanager
def port_forward(env: dict[str, str], namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` to TARGET's PORT (through the kubelet, as a user reaches a pod that no
    NetworkPolicy lets them reach); yields http://127.0.0.1:LOCAL."""
    local = free_port()
    proc = subprocess.Popen(["kubectl", "port-forward", "-n", namespace, target, f"{local}:{port}"], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", local), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    f"kubectl port-forward {target} did not listen: {proc.stdout.read() if proc.stdout else ''}"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def http_json(url: str, body: bytes | None = None, timeout: float = 30) -> Any:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
