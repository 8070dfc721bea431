"""The GitHub workflows themselves, run by `act` (tools/build.sh builds it) in its self-hosted mode: the
jobs run on this machine against the local cluster, a file backend and a fake GitHub API on 127.0.0.1.

A clone of the project (e2e.engine.copy_project) is the repository: its `dev` stack is the local
stack's config, its `prod` stack promotes dev's digests, each under its own passphrase, created
beforehand as a team would (their salts committed). The third-party actions the workflows pin are
stood in for by e2e/actions/ (this machine cannot fetch them); make and scripts/ci/ run for real.
The steps run in order: a push to main deploys dev and promotes prod; a pull request previews both
stacks into one comment each and brings up and smoke-tests its own stack; closing it destroys that.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import TIMINGS
from e2e.engine import REPO, Result, copy_project, kubectl, run, tools_env
from tests.ci.fakes import FakeGitHub

pytestmark = pytest.mark.e2e

REPOSITORY = "organization/modelstack"  # github.repository: the clone's origin
PR = 4343
STAND_INS = {  # pinned action -> e2e/actions/ folder
    "actions/checkout": "checkout", "actions/setup-python": "setup-python", "pulumi/actions": "pulumi",
    "actions/upload-artifact": "upload-artifact", "actions/download-artifact": "download-artifact",
    "aws-actions/configure-aws-credentials": "aws-credentials",
}  # fmt: skip


def stand_ins() -> list[str]:
    """`--local-repository` for every pinned action of the workflows."""
    pins = set()
    for workflow in (REPO / ".github" / "workflows").glob("*.yml"):
        pins |= set(re.findall(r"uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})", workflow.read_text()))
    missing = sorted(action for action, _ in pins if action not in STAND_INS)
    assert not missing, f"no stand-in in e2e/actions/ for {missing}"
    return [f"--local-repository={a}@{sha}={REPO / 'e2e' / 'actions' / STAND_INS[a]}" for a, sha in sorted(pins)]


@dataclass
class Repo:
    root: Path
    work: Path
    env: dict[str, str]
    secrets: dict[str, str]
    backend: str
    head: str

    def act(self, event: str, workflow: str, payload: dict[str, Any], timing: str, **env: str) -> Result:
        event_file = self.work / f"{timing.replace(' ', '-')}.json"
        event_file.write_text(json.dumps(payload))
        args = ["act", event, "-W", f".github/workflows/{workflow}", "-e", str(event_file),
                "-P", "ubuntu-latest=-self-hosted", "--no-skip-checkout", "--action-offline-mode",
                "--action-cache-path", str(self.work / "act-cache"), *stand_ins(),
                "--var", f"PULUMI_BACKEND_URL={self.backend}",
                *(f"--secret={k}={v}" for k, v in self.secrets.items()),
                *(f"--env={k}={v}" for k, v in env.items())]  # fmt: skip
        result = run(args, self.env, timeout=3000, cwd=self.root)
        (self.work / f"{timing.replace(' ', '-')}.log").write_text(result.output)
        return result

    def outputs(self, stack: str, passphrase: str) -> dict[str, Any]:
        env = {**self.env, "PULUMI_BACKEND_URL": self.backend, "PULUMI_CONFIG_PASSPHRASE": passphrase}
        out = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack, "--non-interactive"],
                             cwd=self.root, env=env, capture_output=True, text=True, check=True)  # fmt: skip
        return dict(json.loads(out.stdout))


def succeeded(result: Result) -> set[str]:
    """The jobs act reports as succeeded ("[workflow/job name] 🏁  Job succeeded")."""
    return {name.strip() for name in re.findall(r"^\[[^/\]]+/([^\]]+)\]\s+🏁\s+Job succeeded", result.output, re.M)}


def pull_request(repo: Repo, action: str) -> dict[str, Any]:
    full = {"full_name": REPOSITORY}
    return {"action": action, "number": PR, "repository": full,
            "pull_request": {"number": PR, "state": "closed" if action == "closed" else "open",
                             "head": {"repo": full, "sha": repo.head, "ref": "feature"},
                             "base": {"repo": full, "sha": repo.head, "ref": "main"}}}  # fmt: skip


@pytest.fixture(scope="module")
def repo(cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    work = tmp_path_factory.mktemp("workflows")
    root = work / "repository"
    root.mkdir()
    copy_project(root)
    # What a runner's cache restores: the example models, the policy pack's venv, the image's wheels.
    for name in ("examples/digits/build", "examples/text/build", "policy/.venv", ".cache"):
        (root / name).symlink_to(REPO / name)
    local = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"]
    dev = {**local, "modelstack:artifacts": {"store": str(work / "artifacts-dev")},
           "modelstack:serving": {**local["modelstack:serving"], "replicas": 1}}  # fmt: skip
    prod = {k: v for k, v in dev.items() if k not in ("modelstack:model", "modelstack:image")}
    prod.update({"modelstack:promote": {"from": f"{REPOSITORY}/dev"},
                 "modelstack:artifacts": {"store": str(work / "artifacts-prod")}})  # fmt: skip
    backend = f"file://{work / 'state'}"
    (work / "state").mkdir()
    secrets = {f"{key}_PULUMI_CONFIG_PASSPHRASE": os.urandom(12).hex() for key in ("DEV", "PROD")}
    secrets["GITHUB_TOKEN"] = "test-token"  # github.token; the fake GitHub API's
    tools = tools_env()  # act among them
    # The venv first, as `local-cluster/cluster.sh env` puts it: the language host tools/build.sh builds
    # runs the `python3` on PATH (tools/README.md).
    path = f"{REPO / '.venv' / 'bin'}:{tools['PATH']}"
    env = {**cluster, "PATH": path, "PULUMI_HOME": tools["PULUMI_HOME"], "PULUMI_SKIP_UPDATE_CHECK": "true",
           "MODELSTACK_ACT_SOURCE": str(root), "MODELSTACK_ACT_ARTIFACTS": str(work / "artifacts")}  # fmt: skip
    git = {**env, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.com", "GIT_COMMITTER_NAME": "e2e",
           "GIT_COMMITTER_EMAIL": "e2e@example.com"}  # fmt: skip
    # The team's set-up (docs/delivery.md): dev and prod exist in the backend, each under its passphrase.
    for stack, config in (("dev", dev), ("prod", prod)):
        (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
        passphrase = secrets[f"{stack.upper()}_PULUMI_CONFIG_PASSPHRASE"]
        run(["pulumi", "stack", "init", stack, "--secrets-provider", "passphrase", "--non-interactive"],
            {**env, "PULUMI_BACKEND_URL": backend, "PULUMI_CONFIG_PASSPHRASE": passphrase}, cwd=root).check()
    for cmd in (["add", "-A"], ["commit", "-qm", "dev on the local cluster, prod promoting it"],
                ["remote", "add", "origin", f"https://github.com/{REPOSITORY}.git"]):
        subprocess.run(["git", *cmd], cwd=root, env=git, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    r = Repo(root, work, env, secrets, backend, head)
    try:
        yield r
    finally:
        base = {**env, "PULUMI_BACKEND_URL": backend}
        for stack, key in ((f"pr-{PR}", "DEV"), ("prod", "PROD"), ("dev", "DEV")):
            stack_env = {**base, "PULUMI_CONFIG_PASSPHRASE": secrets[f"{key}_PULUMI_CONFIG_PASSPHRASE"]}
            run(["pulumi", "destroy", "--yes", "--stack", stack, "--non-interactive"], stack_env, 900, cwd=root)
            run(["pulumi", "stack", "rm", "--yes", "--force", "--stack", stack, "--non-interactive"], stack_env, 60,
                cwd=root)


def test_1_a_push_to_main_deploys_dev_then_promotes_its_digests_to_prod(repo: Repo) -> None:
    result = repo.act("push", "main.yml", {"ref": "refs/heads/main", "after": repo.head,
                                           "repository": {"full_name": REPOSITORY}}, "main push")  # fmt: skip
    TIMINGS["act: main.yml push (deploy, promote)"] = round(result.seconds, 1)
    assert result.returncode == 0, result.output[-6000:]
    assert succeeded(result) == {"deploy dev", "promote to prod"}, result.output[-3000:]
    dev = repo.outputs("dev", repo.secrets["DEV_PULUMI_CONFIG_PASSPHRASE"])
    prod = repo.outputs("prod", repo.secrets["PROD_PULUMI_CONFIG_PASSPHRASE"])
    assert prod["image"] == dev["image"] and prod["modelDigest"] == dev["modelDigest"]
    assert f"deploy: prod image {dev['image']}" in result.output


def test_2_a_pull_request_previews_each_stack_into_its_comment_and_smoke_tests_its_stack(repo: Repo) -> None:
    with FakeGitHub(repo=REPOSITORY, number=PR) as github:
        result = repo.act("pull_request", "pull-request.yml", pull_request(repo, "opened"), "pull request opened",
                          GITHUB_API_URL=github.env()["GITHUB_API_URL"])  # fmt: skip
    TIMINGS["act: pull-request.yml opened"] = round(result.seconds, 1)
    assert result.returncode == 0, result.output[-6000:]
    assert succeeded(result) == {"preview dev", "preview prod", "comment the dev preview",
                                 "comment the prod preview", f"deploy and smoke-test pr-{PR}"}, result.output[-3000:]
    bodies = sorted(c.body.splitlines()[0] for c in github.comments)
    assert bodies == ["<!-- modelstack:preview:dev -->", "<!-- modelstack:preview:prod -->"], github.comments
    assert all("no changes" in c.body for c in github.comments), [c.body[:600] for c in github.comments]
    assert f"smoke: pr-{PR} ok:" in result.output
    namespace = kubectl(repo.env, "get", "namespace", f"modelstack-pr-{PR}", check=False)
    assert namespace.returncode == 0


def test_3_closing_the_pull_request_destroys_its_stack(repo: Repo) -> None:
    result = repo.act("pull_request", "pull-request.yml", pull_request(repo, "closed"), "pull request closed")
    TIMINGS["act: pull-request.yml closed"] = round(result.seconds, 1)
    assert result.returncode == 0, result.output[-6000:]
    assert succeeded(result) == {f"destroy pr-{PR}"}, result.output[-3000:]
    assert f"pr-stack: pr-{PR} destroyed and removed" in result.output
    assert kubectl(repo.env, "get", "namespace", f"modelstack-pr-{PR}", check=False).returncode != 0
