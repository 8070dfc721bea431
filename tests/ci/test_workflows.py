"""The GitHub workflows users copy: actionlint and zizmor find nothing, and each would find a
deliberately bad workflow; structural rules (pinned actions, least privilege, logic in scripts/ci)
hold; scripts/ci/*.sh pass shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ci.fakes import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SCRIPTS = sorted((REPO / "scripts" / "ci").glob("*.sh"))
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*(\S+)\s+#\s*v\d+\.\d+\.\d+\s*$")
# The scripts that write to pull requests: the preview comment, the lock refresh's pull request.
PR_WRITERS = ("scripts/ci/comment.sh", "scripts/ci/lock-pr.sh")
SCRIPT_CALL = re.compile(r"^(scripts/ci/[A-Za-z0-9_.-]+\.sh|make)( |$)")

BAD_WORKFLOW = """\
name: bad
on: pull_request
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""


def find(name: str) -> str | None:
    """A binary from the project's venv (requirements.txt), else PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def tool(name: str) -> str:
    found = find(name)
    if not found:
        pytest.fail(f"{name} is not installed next to {sys.executable} or on PATH (requirements.txt lists it)")
    return found


def bad_repo(tmp_path: Path) -> Path:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(BAD_WORKFLOW)
    return workflows


def lint(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def actionlint_cmd() -> list[str]:
    cmd = [tool("actionlint"), "-no-color"]
    shellcheck = find("shellcheck")  # actionlint checks run: blocks with it when it is there
    return [*cmd, "-shellcheck", shellcheck] if shellcheck else cmd


def zizmor_cmd(path: Path) -> list[str]:
    # Exit codes are non-zero on any finding; auditor is the strictest persona; no config may mute it.
    return [tool("zizmor"), "--offline", "--persona", "auditor", "--no-config", "--no-progress", "--color", "never",
            str(path)]


def test_there_are_workflows_and_scripts() -> None:
    assert {p.name for p in WORKFLOWS} >= {"pull-request.yml", "main.yml"}
    assert {p.name for p in SCRIPTS} >= {"preview.sh", "comment.sh", "pr-stack.sh", "smoke.sh", "deploy.sh"}


def test_actionlint_finds_nothing() -> None:
    proc = lint([*actionlint_cmd(), *map(str, WORKFLOWS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_reports_a_bad_workflow(tmp_path: Path) -> None:
    workflows = bad_repo(tmp_path)
    proc = lint([*actionlint_cmd(), str(workflows / "bad.yml")], cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "github.event.pull_request.title" in proc.stdout and "untrusted" in proc.stdout


def test_zizmor_finds_nothing() -> None:
    proc = lint(zizmor_cmd(REPO / ".github" / "workflows"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_reports_a_bad_workflow(tmp_path: Path) -> None:
    proc = lint(zizmor_cmd(bad_repo(tmp_path)), cwd=tmp_path)
    assert proc.returncode >= 10, proc.stdout + proc.stderr  # 10 + the highest severity found
    for audit in ("unpinned-uses", "template-injection", "artipacked", "excessive-permissions"):
        assert audit in proc.stdout, audit


# --- structure --------------------------------------------------------------------------------

def problems(text: str) -> list[str]:
    """What a workflow breaks of the project's rules, one line each."""
    doc: dict[Any, Any] = yaml.safe_load(text)
    out = []
    if doc.get("permissions") != {}:
        out.append("top-level permissions must be {} (each job asks for what it needs)")
    for line in text.splitlines():
        m = re.search(r"^\s*(?:-\s+)?uses:\s*(\S+)", line)
        if m and not m.group(1).startswith("./"):
            if not PINNED.match(m.group(1)):
                out.append(f"{m.group(1)}: not pinned by a full commit SHA")
            elif not VERSION_COMMENT.search(line):
                out.append(f"{m.group(1)}: no '# vX.Y.Z' comment naming the release")
    for name, job in (doc.get("jobs") or {}).items():
        perms = job.get("permissions")
        if perms is None:
            out.append(f"job {name}: no permissions")
            perms = {}
        steps = job.get("steps") or []
        uses = [s.get("uses", "") for s in steps]
        runs = [s.get("run", "") for s in steps if "run" in s]
        if perms.get("id-token") == "write" and not any("configure-aws-credentials" in u for u in uses):
            out.append(f"job {name}: id-token: write without AWS credentials")
        if perms.get("pull-requests") == "write" and not any(s in r for r in runs for s in PR_WRITERS):
            out.append(f"job {name}: pull-requests: write without posting a comment or opening a pull request")
        for step in steps:
            if step.get("uses", "").startswith("actions/checkout@") and \
                    (step.get("with") or {}).get("persist-credentials") is not False:
                out.append(f"job {name}: checkout without persist-credentials: false")
        for run in runs:
            if "${{" in run:
                out.append(f"job {name}: an expression inlined into run: (pass it through env:)")
            for command in filter(None, (c.strip() for c in run.splitlines())):
                if not SCRIPT_CALL.match(command):
                    out.append(f"job {name}: run: {command!r} does work outside scripts/ci or make")
                elif command.startswith("scripts/"):
                    script = REPO / command.split()[0]
                    if not (script.is_file() and script.stat().st_mode & 0o111):
                        out.append(f"job {name}: {script.relative_to(REPO)} is missing or not executable")
    return out


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_follows_the_rules(workflow: Path) -> None:
    assert problems(workflow.read_text()) == []


def test_the_rules_catch_a_bad_workflow() -> None:
    found = problems(BAD_WORKFLOW + "      - run: scripts/ci/missing.sh\n"
                                    "  sneaky:\n    runs-on: ubuntu-latest\n"
                                    "    permissions:\n      id-token: write\n      pull-requests: write\n"
                                    "    steps:\n      - uses: actions/checkout@" + "a" * 40 + "\n")
    assert "top-level permissions must be {} (each job asks for what it needs)" in found
    assert "actions/checkout@v4: not pinned by a full commit SHA" in found
    assert f"actions/checkout@{'a' * 40}: no '# vX.Y.Z' comment naming the release" in found
    assert "job build: no permissions" in found
    assert "job build: checkout without persist-credentials: false" in found
    assert "job build: an expression inlined into run: (pass it through env:)" in found
    assert any("does work outside scripts/ci or make" in p for p in found)
    assert "job build: scripts/ci/missing.sh is missing or not executable" in found
    assert "job sneaky: id-token: write without AWS credentials" in found
    assert "job sneaky: pull-requests: write without posting a comment or opening a pull request" in found


def test_pull_request_workflow_shape() -> None:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())
    triggers = doc[True]["pull_request"]["types"]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"opened", "synchronize", "reopened", "closed"}
    assert "github.event.pull_request.number" in doc["concurrency"]["group"]
    assert doc["concurrency"]["cancel-in-progress"] is False
    jobs = doc["jobs"]
    assert "action == 'closed'" in jobs["pr-stack-destroy"]["if"]
    assert "action != 'closed'" in jobs["pr-stack"]["if"] and "action != 'closed'" in jobs["preview"]["if"]
    assert "pull-requests" not in jobs["preview"]["permissions"]  # the job running project code cannot write
    assert jobs["comment"]["needs"] == "preview"


def test_locks_workflow_refreshes_weekly_through_a_pull_request() -> None:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "locks.yml").read_text())
    assert doc[True]["schedule"] and "workflow_dispatch" in doc[True]
    (job,) = doc["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert "environment" not in job  # it runs main's code only and reads no stack secrets
    assert [s["run"] for s in job["steps"] if "run" in s] == ["scripts/ci/lock-pr.sh"]


def test_main_workflow_promotes_to_prod_after_dev() -> None:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "main.yml").read_text())
    assert doc[True]["push"]["branches"] == ["main"]
    dev, prod = doc["jobs"]["deploy-dev"], doc["jobs"]["promote-prod"]
    assert dev["environment"] == "dev" and prod["environment"] == "prod" and prod["needs"] == "deploy-dev"
    assert [s["run"] for s in dev["steps"] if "deploy.sh" in s.get("run", "")] == ["scripts/ci/deploy.sh dev"]
    assert [s["run"] for s in prod["steps"] if "deploy.sh" in s.get("run", "")] == ["scripts/ci/deploy.sh prod"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_strict_executable_and_documented(script: Path) -> None:
    text = script.read_text()
    if script.name == "lib.sh":  # sourced, never run
        assert text.startswith("# Shared by scripts/ci/")
        return
    assert script.stat().st_mode & 0o111, "not executable"
    assert text.startswith("#!/usr/bin/env bash\n# ")  # a usage header comes first
    assert "scripts/ci/" + script.name in text.split("set -euo pipefail")[0]
    assert "\nset -euo pipefail\n" in text


# --- shellcheck (Debian's `shellcheck`, from scripts/install-system-deps.sh) ---------------------------------------

def shellcheck() -> str:
    found = find("shellcheck")
    assert found, "shellcheck is not installed: `make test` installs it (scripts/install-system-deps.sh)"
    return found


def test_shellcheck_finds_nothing_in_the_ci_scripts() -> None:
    proc = lint([shellcheck(), "-x", *map(str, SCRIPTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_reports_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    proc = lint([shellcheck(), str(bad)])
    assert proc.returncode == 1 and "SC2086" in proc.stdout
