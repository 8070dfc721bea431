"""`git status` after the main job's Pulumi commands, under the real CLI: every stack's salt, secrets
and overrides stay in the git-ignored working copies (scripts/pulumi.sh, scripts/stack_config.py).

A clone of the project's tracked files in a temporary directory (this checkout's own stacks and state
are not touched), with the project's venv; no cluster is needed: config and destroy of a stack
without resources. Kubernetes contexts exist in a kubeconfig of their own for scripts/preflight.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from e2e.engine import copy_project, tools_env

pytestmark = pytest.mark.e2e

KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "kind-modelstack",
    "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "none", "user": {}}],
    "contexts": [{"name": name, "context": {"cluster": "none", "user": "none"}}
                 for name in ("kind-modelstack", "modelstack-local", "ml-prod")],
}  # fmt: skip


class Clone:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env

    def sh(self, *args: str, check: bool = True, **extra: str) -> str:
        proc = subprocess.run(args, cwd=self.root, env={**self.env, **extra}, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert not check or proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        return proc.stdout.strip()

    def pulumi(self, stack: str, *args: str, **extra: str) -> str:
        return self.sh("scripts/pulumi.sh", stack, *args, "--non-interactive", **extra)

    def status(self) -> str:
        return self.sh("git", "status", "--porcelain", "--untracked-files=all")

    def working(self, stack: str) -> dict:
        return yaml.safe_load((self.root / ".modelstack" / f"Pulumi.{stack}.yaml").read_text())


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Clone:
    root = tmp_path_factory.mktemp("clone")
    copy_project(root)
    kubeconfig = root.parent / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    c = Clone(root, {**tools_env(), "KUBECONFIG": str(kubeconfig), "PULUMI_SKIP_UPDATE_CHECK": "true",
                     "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.com",
                     "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.com"})  # fmt: skip
    assert c.status() == ""
    return c


@pytest.mark.parametrize("stack", ["local", "dev", "pr-7", "prod"])
def test_a_new_stack_leaves_the_tree_clean(clone: Clone, stack: str) -> None:
    extra = {"PULUMI_CONFIG_PASSPHRASE": os.urandom(12).hex()} if stack == "prod" else {}
    keys = clone.pulumi(stack, "config", "--json", **extra)
    assert clone.status() == ""
    working = clone.working(stack)
    assert working["encryptionsalt"].startswith("v1:")
    secret = "modelstack:grafanaAdminPassword" in yaml.safe_load(keys)
    assert secret == (stack in ("dev", "pr-7")), keys  # local runs no Grafana; prod's is set by its team
    if stack == "pr-7":
        assert not (clone.root / "Pulumi.pr-7.yaml").exists()
        assert clone.pulumi(stack, "config", "get", "--path", "registry.manage") == "false"


def test_the_generated_secret_stays_and_tracked_changes_arrive(clone: Clone) -> None:
    password = clone.pulumi("dev", "config", "get", "grafanaAdminPassword")
    assert len(password) >= 20
    clone.pulumi("dev", "config", "set", "--path", "serving.cpu", "250m")  # this machine's override
    tracked = clone.root / "Pulumi.dev.yaml"
    tracked.write_text(tracked.read_text().replace("    replicas: 1\n", "    replicas: 3\n"))
    clone.sh("git", "commit", "-qam", "dev runs 3 replicas")
    assert clone.pulumi("dev", "config", "get", "--path", "serving.replicas") == "3"
    assert clone.pulumi("dev", "config", "get", "--path", "serving.cpu") == "250m"
    assert clone.pulumi("dev", "config", "get", "grafanaAdminPassword") == password
    assert clone.status() == ""


@pytest.mark.parametrize("stack", ["local", "dev", "pr-7"])
def test_destroy_and_removal_leave_the_tree_clean_and_a_new_stack_gets_new_secrets(clone: Clone, stack: str) -> None:
    before = clone.working(stack)
    clone.pulumi(stack, "destroy", "--yes")
    clone.pulumi(stack, "stack", "rm", "--yes")
    assert clone.status() == ""
    clone.pulumi(stack, "config")  # created anew
    after = clone.working(stack)
    assert after["encryptionsalt"] != before["encryptionsalt"]
    if stack != "local":  # decryptable under the new salt: a new one
        assert clone.pulumi(stack, "config", "get", "grafanaAdminPassword")
    assert clone.status() == ""
