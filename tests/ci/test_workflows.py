"""The GitHub workflows users copy: actionlint and zizmor find nothing, and each would find a
deliberately bad workflow; the project's rules (scripts/ci/workflow_rules.py: pinned actions, least
privilege, logic in scripts/ci, secrets per stack) hold; scripts/ci/*.sh pass shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.ci.workflow_rules import PROD_ENVIRONMENTS, problems
from tests.ci.fakes import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SCRIPTS = sorted((REPO / "scripts" / "ci").glob("*.sh"))
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
    assert any(p.startswith("job sneaky: can write and runs on pull requests: check out the base commit")
               for p in found)


SECRETS_WORKFLOW = """\
name: secrets
on: pull_request
permissions: {}
jobs:
  %s:
    runs-on: ubuntu-latest
%s    permissions:
      contents: read
    steps:
      - name: preview
        env:
          PULUMI_CONFIG_PASSPHRASE: ${{ secrets.%s }}
        run: scripts/ci/preview.sh prod
"""


@pytest.mark.parametrize(("environment", "secret", "problem"), [
    ("", "PROD_PULUMI_CONFIG_PASSPHRASE", "secrets.PROD_PULUMI_CONFIG_PASSPHRASE in a job whose environment (none)"),
    ("dev-preview", "PROD_PULUMI_CONFIG_PASSPHRASE", "environment (dev-preview) is not one of prod, prod-preview"),
    ("pr", "PROD_PULUMI_ACCESS_TOKEN", "secrets.PROD_PULUMI_ACCESS_TOKEN in a job whose environment (pr)"),
    ("preview", "PULUMI_CONFIG_PASSPHRASE", "secrets.PULUMI_CONFIG_PASSPHRASE is not named for one stack"),
    ("prod-preview", "PROD_PULUMI_CONFIG_PASSPHRASE", None),
    ("dev-preview", "DEV_PULUMI_CONFIG_PASSPHRASE", None),
])  # fmt: skip
def test_the_rules_keep_prods_secrets_to_jobs_its_reviewers_guard(environment: str, secret: str,
                                                                  problem: str | None) -> None:
    text = SECRETS_WORKFLOW % ("leaky", f"    environment: {environment}\n" if environment else "", secret)
    found = problems(text)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith("job leaky: ") and problem in found[0], found


def test_the_rules_refuse_a_writer_that_runs_the_pull_requests_code() -> None:
    writer = BAD_WORKFLOW.replace("    runs-on: ubuntu-latest\n", "    runs-on: ubuntu-latest\n    permissions:\n"
                                  "      contents: read\n      pull-requests: write\n")  # fmt: skip
    base = "        with:\n          ref: ${{ github.event.pull_request.base.sha }}\n"
    assert any("check out the base commit" in p for p in problems(writer))
    assert not any("check out the base commit" in p for p in problems(writer.replace("@v4\n", "@v4\n" + base)))


def test_make_lint_runs_the_rules_and_they_fail_on_a_bad_workflow(tmp_path: Path) -> None:
    assert "scripts/ci/workflow_rules.py .github/workflows/*.yml" in (REPO / "Makefile").read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(SECRETS_WORKFLOW % ("leaky", "", "PROD_PULUMI_CONFIG_PASSPHRASE"))
    script = str(REPO / "scripts" / "ci" / "workflow_rules.py")
    proc = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout.startswith(f"{bad}: job leaky: secrets.PROD_"), proc.stdout
    proc = subprocess.run([sys.executable, script, *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "no problem" in proc.stdout, proc.stdout


def test_pull_request_workflow_shape() -> None:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())
    triggers = doc[True]["pull_request"]["types"]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"opened", "synchronize", "reopened", "closed"}
    assert "github.event.pull_request.number" in doc["concurrency"]["group"]
    assert doc["concurrency"]["cancel-in-progress"] is False
    jobs = doc["jobs"]
    assert "action == 'closed'" in jobs["pr-stack-destroy"]["if"]
    assert "action != 'closed'" in jobs["pr-stack"]["if"]
    for stack in ("dev", "prod"):
        preview = jobs[f"preview-{stack}"]
        assert "action != 'closed'" in preview["if"]
        assert "pull-requests" not in preview["permissions"]  # the job running project code cannot write
        assert [s["run"] for s in preview["steps"] if "preview.sh" in s.get("run", "")] == [
            f"scripts/ci/preview.sh {stack}"]
        assert jobs[f"comment-{stack}"]["needs"] == f"preview-{stack}"


def secrets_of(job: dict[str, Any]) -> set[str]:
    return set(re.findall(r"secrets\.([A-Za-z0-9_]+)", yaml.safe_dump(job)))


def test_no_pull_request_job_reads_prods_secrets_without_prods_reviewers() -> None:
    """What a pull request's code can run with: dev's secrets, or prod's only in `prod-preview`, the
    environment prod's required reviewers guard (docs/delivery.md); and per-stack passphrases, so
    dev's cannot decrypt prod's (make e2e: e2e/test_delivery.py step 5)."""
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())
    reach = {name: (job.get("environment"), secrets_of(job)) for name, job in doc["jobs"].items()}
    with_prod = {name for name, (_, secrets) in reach.items() if any(s.startswith("PROD_") for s in secrets)}
    assert with_prod == {"preview-prod"}
    assert reach["preview-prod"][0] == "prod-preview" and "prod-preview" in PROD_ENVIRONMENTS
    assert reach["preview-dev"] == ("dev-preview", {"DEV_PULUMI_ACCESS_TOKEN", "DEV_PULUMI_CONFIG_PASSPHRASE",
                                                   "DEV_KUBECONFIG"})
    assert not secrets_of(doc["jobs"]["comment-dev"]) and not secrets_of(doc["jobs"]["comment-prod"])
    delivery = (REPO / "docs" / "delivery.md").read_text()
    assert "`prod-preview`" in delivery and "required reviewers" in delivery


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
