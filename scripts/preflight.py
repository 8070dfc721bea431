"""Check what `make up/preview/destroy` needs before calling Pulumi, and say how to get it.

Usage: python scripts/preflight.py STACK COMMAND. Exit 0 when ready, 1 with one
line per missing thing otherwise (never a traceback); `--no-cli` leaves the Pulumi
CLI out (scripts/up.sh builds one). `--runs-grafana STACK`: exit 0 when the stack
deploys Grafana (it then needs an admin password).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONTEXT = "modelstack-local"  # local-cluster/cluster.sh
INSTALL_PULUMI = "install it from https://www.pulumi.com/docs/iac/download-install/ and put `pulumi` on PATH"


def stack_settings(stack: str) -> dict:
    """The stack's file, or dev's for a stack not created yet (it will be copied from dev)."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        path = ROOT / "Pulumi.dev.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("config") or {}


def kube_contexts() -> set[str] | None:
    """Context names from the kubeconfig files kubectl would read; None when there are none."""
    paths = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    names: set[str] = set()
    found = False
    for p in filter(None, paths.split(os.pathsep)):
        path = Path(p)
        if not path.is_file():
            continue
        found = True
        doc = yaml.safe_load(path.read_text()) or {}
        names.update(c.get("name") for c in doc.get("contexts") or [] if c.get("name"))
    return names if found else None


def problems(stack: str, command: str, cli: bool = True) -> list[str]:
    """What is missing; `cli=False` leaves out the Pulumi CLI (scripts/up.sh builds one when there is none)."""
    out = []
    if cli and shutil.which("pulumi") is None:
        out.append(f"the Pulumi CLI is missing: {INSTALL_PULUMI}")
    config = stack_settings(stack)
    cluster = config.get("modelstack:cluster") or {}
    registry = config.get("modelstack:registry") or {}
    if command in ("up", "preview"):
        docker = shutil.which("docker")
        ok = docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0
        if not ok:
            out.append("no Docker engine answers `docker info`: install Docker and start it "
                       "(the serving image is built locally" +
                       (" and the local registry runs as a container)" if registry.get("type") == "local" else ")"))
    context = cluster.get("context")
    if context:
        contexts = kube_contexts()
        if contexts is None or context not in contexts:
            how = ("create the cluster with `kind create cluster --name modelstack --config deploy/kind-cluster.yaml` "
                   "(its context is kind-modelstack)" if cluster.get("provider") == "kind" else
                   f"run `aws eks update-kubeconfig --name {cluster.get('name')} --region {cluster.get('region')} "
                   f"--alias {context}`" if cluster.get("provider") == "eks" else
                   'start it with `local-cluster/cluster.sh up`, then `eval "$(local-cluster/cluster.sh env)"`'
                   if context == LOCAL_CONTEXT else "add it to your kubeconfig")
            out.append(f"the Kubernetes context '{context}' (modelstack:cluster.context) is not in your kubeconfig: "
                       f"{how}")
    return out


def runs_grafana(stack: str) -> bool:
    monitoring = stack_settings(stack).get("modelstack:monitoring") or {}
    return monitoring.get("mode", "lightweight") != "none" and monitoring.get("grafana", True) is not False


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--runs-grafana":  # exit 0 when the stack runs Grafana (scripts/pulumi.sh)
        return 0 if runs_grafana(argv[2]) else 1
    cli = "--no-cli" not in argv
    argv = [a for a in argv if a != "--no-cli"]
    if len(argv) != 3:
        print("usage: preflight.py [--no-cli] STACK COMMAND | preflight.py --runs-grafana STACK", file=sys.stderr)
        return 2
    found = problems(argv[1], argv[2], cli)
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if found:
        print(f"`make {argv[2]}` needs these; `make test` needs none of them.", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
