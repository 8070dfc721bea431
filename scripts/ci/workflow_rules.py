"""The project's rules for its GitHub workflows, beyond what actionlint and zizmor check.

Usage: workflow_rules.py WORKFLOW.yml [...]   (`make lint` runs it on .github/workflows/)
Prints `FILE: problem` per broken rule and exits 1; exits 0 when every workflow keeps them.

- Least privilege: top-level `permissions: {}`, each job asks for its own; id-token only with AWS
  credentials; pull-requests: write only where a comment or a pull request is written.
- Actions pinned by a full commit SHA with a `# vX.Y.Z` comment; checkout keeps no credentials.
- The logic lives in scripts/ci or make: a `run:` calls nothing else and inlines no expression.
- Secrets per stack: Pulumi's passphrase and access token, and the cluster's kubeconfig, are named
  per stack (DEV_..., PROD_...), and a PROD_ secret reaches only a job in an environment that the prod reviewers guard
  (PROD_ENVIRONMENTS, docs/delivery.md): no job that runs a pull request's code without their
  approval can decrypt prod's secrets.
- A pull-request job that can write runs only the base branch's code: it checks out the base commit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses:\s*(\S+)\s+#\s*v\d+\.\d+\.\d+\s*$")
# The scripts that write to pull requests: the preview comment, the lock refresh's pull request.
PR_WRITERS = ("scripts/ci/comment.sh", "scripts/ci/lock-pr.sh")
SCRIPT_CALL = re.compile(r"^(scripts/ci/[A-Za-z0-9_.-]+\.sh|make)( |$)")
SECRET = re.compile(r"secrets\.([A-Za-z0-9_]+)")
# Secrets that decrypt or reach a stack's state or its cluster: each must name its stack.
STACK_SECRETS = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN", "KUBECONFIG")
STACK_PREFIXES = ("DEV_", "PROD_")
# Environments whose required reviewers are prod's (docs/delivery.md): the only homes of PROD_ secrets.
PROD_ENVIRONMENTS = ("prod", "prod-preview")
BASE_CHECKOUT = "${{ github.event.pull_request.base.sha }}"


def _environment(job: dict[str, Any]) -> str | None:
    env = job.get("environment")
    return env.get("name") if isinstance(env, dict) else env


def _triggers(doc: dict[Any, Any]) -> set[str]:
    on = doc.get(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    if isinstance(on, str):
        return {on}
    return set(on or [])


def _secret_problems(name: str, job: dict[str, Any]) -> list[str]:
    out = []
    environment = _environment(job)
    for secret in sorted(set(SECRET.findall(yaml.safe_dump(job)))):
        if secret.endswith(STACK_SECRETS) and not secret.startswith(STACK_PREFIXES):
            out.append(f"job {name}: secrets.{secret} is not named for one stack (DEV_..., PROD_...): "
                       "a job must not hold every stack's secrets")  # fmt: skip
        if secret.startswith("PROD_") and environment not in PROD_ENVIRONMENTS:
            out.append(f"job {name}: secrets.{secret} in a job whose environment ({environment or 'none'}) is not "
                       f"one of {', '.join(PROD_ENVIRONMENTS)}: prod's secrets need the prod reviewers")  # fmt: skip
    return out


def _writer_problems(name: str, job: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """A pull-request job that can write to the repository must run only the base branch's code
    (id-token is a cloud role's business: its environment scopes it)."""
    perms = job.get("permissions") or {}
    if not any(level == "write" for scope, level in perms.items() if scope != "id-token"):
        return []
    for step in steps:
        if step.get("uses", "").startswith("actions/checkout@") and \
                (step.get("with") or {}).get("ref") != BASE_CHECKOUT:  # fmt: skip
            return [f"job {name}: can write and runs on pull requests: check out the base commit "
                    f"(ref: {BASE_CHECKOUT}), never the pull request's code"]  # fmt: skip
    return []


def problems(text: str, repo: Path = REPO) -> list[str]:
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
    on_pull_requests = bool(_triggers(doc) & {"pull_request", "pull_request_target"})
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
                    (step.get("with") or {}).get("persist-credentials") is not False:  # fmt: skip
                out.append(f"job {name}: checkout without persist-credentials: false")
        for run in runs:
            if "${{" in run:
                out.append(f"job {name}: an expression inlined into run: (pass it through env:)")
            for command in filter(None, (c.strip() for c in run.splitlines())):
                if not SCRIPT_CALL.match(command):
                    out.append(f"job {name}: run: {command!r} does work outside scripts/ci or make")
                elif command.startswith("scripts/"):
                    script = repo / command.split()[0]
                    if not (script.is_file() and script.stat().st_mode & 0o111):
                        out.append(f"job {name}: {script.relative_to(repo)} is missing or not executable")
        out += _secret_problems(name, job)
        if on_pull_requests:
            out += _writer_problems(name, job, steps)
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: workflow_rules.py WORKFLOW.yml [...]", file=sys.stderr)
        return 2
    found = [f"{path}: {problem}" for path in argv for problem in problems(Path(path).read_text())]
    print("\n".join(found) or f"workflow rules: {len(argv)} workflow(s), no problem")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
