"""`make up` on a machine without the Pulumi CLI, Docker or a cluster says what is missing, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.pulumi_harness import ROOT


def _preflight(tmp_path, stack: str, command: str, kubeconfig: str | None = None):
    env = {**os.environ, "PATH": str(tmp_path), "HOME": str(tmp_path)}  # no pulumi, no docker on PATH
    env.pop("KUBECONFIG", None)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run([sys.executable, "scripts/preflight.py", stack, command], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_missing_tools_are_named_with_how_to_get_them(tmp_path):
    out = _preflight(tmp_path, "dev", "up")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "the Pulumi CLI is missing" in out.stderr
    assert "no Docker engine" in out.stderr and "local registry" in out.stderr
    assert "'kind-modelstack'" in out.stderr
    assert "kind create cluster --name modelstack --config deploy/kind-cluster.yaml" in out.stderr


def test_prod_context_hint_names_the_eks_cluster(tmp_path):
    out = _preflight(tmp_path, "prod", "destroy")
    assert "aws eks update-kubeconfig --name ml-prod --region us-west-2 --alias ml-prod" in out.stderr
    assert "Docker" not in out.stderr  # destroy builds nothing


def test_local_context_hint_names_the_local_cluster(tmp_path):
    out = _preflight(tmp_path, "local", "preview")
    assert "'modelstack-local'" in out.stderr and "local-cluster/cluster.sh up" in out.stderr


def test_a_present_context_is_accepted(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncontexts:\n- name: kind-modelstack\n  context: {}\n")
    out = _preflight(tmp_path, "pr-7", "destroy", kubeconfig=str(kubeconfig))
    assert "kind-modelstack" not in out.stderr
    assert "the Pulumi CLI is missing" in out.stderr


def test_without_the_cli_flag_the_rest_is_still_checked(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "HOME": str(tmp_path)}
    env.pop("KUBECONFIG", None)
    out = subprocess.run([sys.executable, "scripts/preflight.py", "--no-cli", "dev", "up"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "Pulumi CLI" not in out.stderr and "'kind-modelstack'" in out.stderr
