"""scripts/ci/*.sh for real: against a fake GitHub API on 127.0.0.1, the real model server, and a
fake `pulumi` (and `kubectl`, `aws`) on PATH that answers from recorded output (the real CLI is
exercised by the e2e suite)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ci.fakes import REPO, Comment, FakeCli, FakeGitHub, script_env
from tests.serving import models
from tests.serving.server import ServerProcess

CI = REPO / "scripts" / "ci"
SAMPLES = Path(__file__).parent / "samples"
MARKER = "<!-- modelstack:preview:dev -->"
BACKEND = {"PULUMI_BACKEND_URL": "s3://example-bucket/modelstack", "PULUMI_CONFIG_PASSPHRASE": "not-a-secret"}
OUTPUTS = {"namespace": "modelstack-pr-7", "endpoint": "http://multi.modelstack-pr-7.svc.cluster.local:8080",
           "modelName": "multi", "image": "registry.example/modelstack/multi@sha256:" + "a" * 64,
           "modelDigest": "b" * 64}


def run(script: str, *args: str, env: dict[str, str], cwd: Path = REPO, timeout: float = 120,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CI / script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_line(text: str) -> str:
    """The single line a failure must be: no traceback, nothing else."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.fixture
def pulumi(bin_dir: Path) -> FakeCli:
    return FakeCli(bin_dir, "pulumi")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server, on a model with INT64, BOOL and FP16 inputs (zeros of each must be accepted)."""
    root = tmp_path_factory.mktemp("ci-model")
    models.write_model_dir(models.multi_model(), root / "multi", "multi")
    proc = ServerProcess(root / "multi", root / "server.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


# --- comment.sh -------------------------------------------------------------------------------

def write_body(path: Path, text: str) -> Path:
    path.write_text(f"{MARKER}\n{text}\n")
    return path


def test_comment_posts_once_then_updates_the_same_comment(tmp_path: Path, bin_dir: Path) -> None:
    with FakeGitHub(comments=[Comment(1, "LGTM"), Comment(2, "<!-- other-bot -->\nhi"), Comment(3, "nit")]) as gh:
        env = script_env(bin_dir, **gh.env())
        first = run("comment.sh", str(write_body(tmp_path / "body.md", "first")), env=env)
        assert first.returncode == 0, first.stderr
        assert "created" in first.stdout
        second = run("comment.sh", str(write_body(tmp_path / "body.md", "second")), env=env)
        assert second.returncode == 0, second.stderr
        assert "updated" in second.stdout

        ours = [c for c in gh.comments if c.body.startswith(MARKER)]
        assert len(ours) == 1 and ours[0].body == f"{MARKER}\nsecond\n"
        methods = [m for m, _, _ in gh.requests]
        assert methods.count("POST") == 1 and methods.count("PATCH") == 1
        assert [p for m, p, _ in gh.requests if m == "PATCH"] == [f"/repos/acme/models/issues/comments/{ours[0].id}"]
        # The second run read every page (4 comments, 2 per page) before deciding.
        assert any("page=2" in p for m, p, _ in gh.requests if m == "GET")


def test_comment_follows_pagination_to_find_the_marker(tmp_path: Path, bin_dir: Path) -> None:
    old = [Comment(1, "first"), Comment(2, "second"), Comment(3, "third"), Comment(40, f"{MARKER}\nold preview")]
    with FakeGitHub(comments=old) as gh:
        proc = run("comment.sh", str(write_body(tmp_path / "b.md", "new preview")), env=script_env(bin_dir, **gh.env()))
        assert proc.returncode == 0, proc.stderr
        assert [m for m, _, _ in gh.requests] == ["GET", "GET", "PATCH"]
        assert gh.comments[-1].body == f"{MARKER}\nnew preview\n" and len(gh.comments) == 4


def test_comment_runs_from_any_directory_with_a_relative_file(tmp_path: Path, bin_dir: Path) -> None:
    write_body(tmp_path / "rel.md", "relative")
    with FakeGitHub() as gh:
        proc = run("comment.sh", "rel.md", env=script_env(bin_dir, **gh.env()), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert gh.comments[0].body == f"{MARKER}\nrelative\n"


@pytest.mark.parametrize("missing", ["GITHUB_TOKEN", "GITHUB_REPOSITORY", "PR_NUMBER"])
def test_comment_without_a_setting_names_it_and_exits_2(tmp_path: Path, bin_dir: Path, missing: str) -> None:
    with FakeGitHub() as gh:
        env = script_env(bin_dir, **gh.env())
        del env[missing]
        proc = run("comment.sh", str(write_body(tmp_path / "b.md", "x")), env=env)
        assert proc.returncode == 2
        assert missing in one_line(proc.stderr)
        assert gh.requests == []


def test_comment_refused_by_github_is_one_line_exit_1(tmp_path: Path, bin_dir: Path) -> None:
    with FakeGitHub() as gh:
        env = {**script_env(bin_dir, **gh.env()), "GITHUB_TOKEN": "wrong"}
        proc = run("comment.sh", str(write_body(tmp_path / "b.md", "x")), env=env)
        assert proc.returncode == 1
        line = one_line(proc.stderr)
        assert "HTTP 401" in line and "Bad credentials" in line


def test_comment_never_sends_the_token_to_another_host(tmp_path: Path, bin_dir: Path) -> None:
    with FakeGitHub(comments=[Comment(1, "a"), Comment(2, "b"), Comment(3, "c")],
                    next_link_override="http://attacker.invalid/steal") as gh:
        proc = run("comment.sh", str(write_body(tmp_path / "b.md", "x")), env=script_env(bin_dir, **gh.env()))
        assert proc.returncode == 1
        assert "refusing to follow" in one_line(proc.stderr)
        assert [m for m, _, _ in gh.requests] == ["GET"]


def test_comment_file_needs_a_marker_line(tmp_path: Path, bin_dir: Path) -> None:
    (tmp_path / "b.md").write_text("## no marker\n")
    with FakeGitHub() as gh:
        proc = run("comment.sh", str(tmp_path / "b.md"), env=script_env(bin_dir, **gh.env()))
        assert proc.returncode == 2 and "marker" in one_line(proc.stderr)
        assert gh.requests == []


# --- preview.sh -------------------------------------------------------------------------------

def preview_rules(pulumi: FakeCli, **stacks: tuple[Path, int]) -> None:
    for stack, (sample, rc) in stacks.items():
        pulumi.rule(rf"^preview .*--stack {stack}( |$)", stdout_file=str(sample), rc=rc)


def sections(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith("### ")]


def test_preview_writes_one_body_per_stack_and_fails_after_writing(tmp_path: Path, bin_dir: Path,
                                                                   pulumi: FakeCli) -> None:
    preview_rules(pulumi, dev=(SAMPLES / "preview-dev.txt", 0), prod=(SAMPLES / "preview-prod-failed.txt", 255))
    out = tmp_path / "out"
    proc = run("preview.sh", "dev", "prod", env=script_env(bin_dir, pulumi, MODELSTACK_CI_OUT=str(out), **BACKEND))
    assert proc.returncode == 1
    assert "at least one preview failed" in proc.stderr.strip().splitlines()[-1]

    body = (out / "preview.md").read_text()
    assert body.splitlines()[0] == "<!-- modelstack:preview:dev,prod -->"  # one comment per set of stacks
    assert sections(body) == [
        "### ⚠️ `dev`: ~ 2 to update · +-1 to replace · 3 changes. 17 unchanged",
        "### ❌ `prod`: preview failed (exit 255)",
    ]
    assert "**[advisory]** `serving-replicas` on `kubernetes:apps/v1:Deployment: serving-deployment`" in body
    assert "**[mandatory] [severity: high]** `no-privilege-escalation`" in body
    assert "**[mandatory]** `prod-keeps-pdb`" in body and "Policy violations (2)" in body
    assert "Planned before the failure: ~ 1 to update · - 1 to delete · 2 changes. 24 unchanged" in body
    assert body.count("<details>") == 2 and body.count("```diff") == 2
    # Pulumi's markers moved to column 0 so GitHub colours them; the text itself is unchanged.
    assert re.search(r'^! {15}~ mode: "dynamic_int8" => "static_int8"$', body, re.M)
    assert re.search(r"^- {5}- kubernetes:policy/v1:PodDisruptionBudget: \(delete\)$", body, re.M)
    assert "Trimmed" not in body
    assert (out / "preview-dev.log").read_text() == (SAMPLES / "preview-dev.txt").read_text()

    for stack in ("dev", "prod"):
        (argv,) = [c["argv"] for c in pulumi.calls() if "--stack" in c["argv"] and stack in c["argv"]]
        assert argv[:2] == ["preview", "--diff"]
        for flag in ("--non-interactive", "--color never", "--policy-pack policy/analyzer", f"--stack {stack}"):
            assert flag in " ".join(argv)


def test_preview_all_passing_exits_0_and_shows_errors_of_a_failed_program(tmp_path: Path, bin_dir: Path,
                                                                        pulumi: FakeCli) -> None:
    preview_rules(pulumi, dev=(SAMPLES / "preview-dev.txt", 0))
    out = tmp_path / "ok"
    ok = run("preview.sh", "dev", env=script_env(bin_dir, pulumi, MODELSTACK_CI_OUT=str(out), **BACKEND))
    assert ok.returncode == 0, ok.stderr
    assert "preview: dev: ~ 2 to update" in ok.stdout

    preview_rules(pulumi, prod=(SAMPLES / "preview-config-error.txt", 1))
    bad = run("preview.sh", "prod", env=script_env(bin_dir, pulumi, MODELSTACK_CI_OUT=str(out), **BACKEND))
    assert bad.returncode == 1
    body = (out / "preview.md").read_text()
    assert sections(body) == ["### ❌ `prod`: preview failed (exit 1)"]
    assert "> error: Pulumi.prod.yaml: modelstack:serving.pdb.minAvailable: 3 must be below" in body


def test_preview_trims_a_huge_diff_to_fit_a_github_comment(tmp_path: Path, bin_dir: Path, pulumi: FakeCli) -> None:
    huge = tmp_path / "huge.txt"
    dev = (SAMPLES / "preview-dev.txt").read_text()
    filler = "".join(f'      ~ data["model-{i:06d}"]: "{"x" * 40}" => "{"y" * 40}"\n' for i in range(40_000))
    head, tail = dev.split("Resources:\n", 1)
    huge.write_text(head + filler + "Resources:\n" + tail)  # ~4 MB, the summary still at the end
    preview_rules(pulumi, dev=(huge, 0), prod=(SAMPLES / "preview-prod-failed.txt", 255))
    out = tmp_path / "out"
    proc = run("preview.sh", "dev", "prod", env=script_env(bin_dir, pulumi, MODELSTACK_CI_OUT=str(out), **BACKEND))
    assert proc.returncode == 1

    body = (out / "preview.md").read_text()
    assert len(body.encode("utf-16-le")) // 2 <= 65_536
    assert len(body) > 60_000  # the budget is used, not wasted
    assert body.splitlines()[0] == "<!-- modelstack:preview:dev,prod -->"
    assert sections(body)[0].startswith("### ⚠️ `dev`: ~ 2 to update") and len(sections(body)) == 2
    assert "_Trimmed to fit GitHub's comment limit:" in body and "lines shown" in body
    # The small prod diff is whole; the huge one keeps its beginning; every block is closed.
    assert "modelstack@v0.1.0 [mandatory]  prod-keeps-pdb" in body
    assert "  Previewing update (dev):" in body and "model-039999" not in body
    assert body.count("```diff") == 2 and body.count("\n```\n") == 2 and body.count("</details>") == 2


def test_preview_fences_output_that_contains_backticks(tmp_path: Path, bin_dir: Path, pulumi: FakeCli) -> None:
    sample = tmp_path / "ticks.txt"
    sample.write_text('Previewing update (dev):\n    ~ data: "```\\nnot markdown\\n```"\n'
                      "Resources:\n    ~ 1 to update\n")
    preview_rules(pulumi, dev=(sample, 0))
    proc = run("preview.sh", "dev", env=script_env(bin_dir, pulumi, MODELSTACK_CI_OUT=str(tmp_path), **BACKEND))
    assert proc.returncode == 0, proc.stderr
    assert "````diff\n" in (tmp_path / "preview.md").read_text()


def test_preview_runs_from_any_directory(tmp_path: Path, bin_dir: Path, pulumi: FakeCli) -> None:
    preview_rules(pulumi, dev=(SAMPLES / "preview-dev.txt", 0))
    proc = run("preview.sh", "dev", env=script_env(bin_dir, pulumi, MODELSTACK_CI_OUT="rel", **BACKEND), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rel" / "preview.md").read_text().startswith("<!-- modelstack:preview:dev -->\n")


def test_ci_scripts_never_fall_back_to_a_local_backend(tmp_path: Path, bin_dir: Path, pulumi: FakeCli) -> None:
    for script, args in [("preview.sh", ["dev"]), ("deploy.sh", ["dev"]), ("smoke.sh", ["dev"]),
                         ("pr-stack.sh", ["up", "7"]), ("kubeconfig.sh", ["dev"])]:
        proc = run(script, *args, env=script_env(bin_dir, pulumi, MODELSTACK_CI_OUT=str(tmp_path)))
        assert proc.returncode == 2, (script, proc.stderr)
        assert "PULUMI_BACKEND_URL" in one_line(proc.stderr)
    assert pulumi.calls() == []


# --- smoke.sh ---------------------------------------------------------------------------------

def outputs_rule(pulumi: FakeCli, **overrides: object) -> None:
    pulumi.rule(r"^stack output --json", stdout=json.dumps({**OUTPUTS, **overrides}))


@pytest.mark.slow
def test_smoke_passes_against_the_real_server(bin_dir: Path, pulumi: FakeCli, server: ServerProcess) -> None:
    outputs_rule(pulumi)
    proc = run("smoke.sh", "pr-7", env=script_env(bin_dir, pulumi, MODELSTACK_SMOKE_URL=server.url, **BACKEND))
    assert proc.returncode == 0, proc.stderr
    line = one_line(proc.stdout)
    assert line.startswith("smoke: pr-7 ok:") and " ms " in line and "emb" in line
    assert pulumi.commands() == ["stack output --json --stack pr-7 --non-interactive"]


@pytest.mark.slow
def test_smoke_fails_in_one_line_on_a_wrong_model_name(bin_dir: Path, pulumi: FakeCli,
                                                       server: ServerProcess) -> None:
    outputs_rule(pulumi, modelName="digits")
    proc = run("smoke.sh", "pr-7", env=script_env(bin_dir, pulumi, MODELSTACK_SMOKE_URL=server.url, **BACKEND))
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "model metadata check failed" in line and "HTTP 404" in line and "/v2/models/digits" in line


def test_smoke_fails_in_one_line_on_a_dead_port(bin_dir: Path, pulumi: FakeCli) -> None:
    outputs_rule(pulumi)
    env = script_env(bin_dir, pulumi, MODELSTACK_SMOKE_URL="http://127.0.0.1:9", MODELSTACK_SMOKE_TIMEOUT="2",
                     **BACKEND)
    start = time.monotonic()
    proc = run("smoke.sh", "pr-7", env=env)
    assert proc.returncode == 1
    assert "readiness check failed" in one_line(proc.stderr) and "within 2 s" in proc.stderr
    assert time.monotonic() - start < 20


def test_smoke_names_a_missing_output(bin_dir: Path, pulumi: FakeCli) -> None:
    outputs_rule(pulumi, modelName=None)
    proc = run("smoke.sh", "pr-7", env=script_env(bin_dir, pulumi, MODELSTACK_SMOKE_URL="http://127.0.0.1:9",
                                                  **BACKEND))
    assert proc.returncode == 1 and "modelName missing" in one_line(proc.stderr)


@pytest.mark.slow
def test_smoke_port_forwards_to_the_service_and_stops_it(bin_dir: Path, pulumi: FakeCli,
                                                         server: ServerProcess) -> None:
    outputs_rule(pulumi)
    pulumi.rule(r"^config get .*cluster\.context", stdout="kind-modelstack\n")
    kubectl = FakeCli(bin_dir, "kubectl").rule(
        r"port-forward", stdout=f"Forwarding from 127.0.0.1:{server.port} -> 8080\n"
                                f"Forwarding from [::1]:{server.port} -> 8080\n", sleep=300)
    proc = run("smoke.sh", "pr-7", env=script_env(bin_dir, pulumi, kubectl, **BACKEND))
    assert proc.returncode == 0, proc.stderr
    (call,) = kubectl.calls()
    assert call["argv"] == ["--context", "kind-modelstack", "port-forward", "-n", "modelstack-pr-7", "svc/multi",
                            ":8080"]
    with pytest.raises(ProcessLookupError):  # stopped by the script's trap
        os.kill(call["pid"], 0)


# --- pr-stack.sh ------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["up", "0"], ["up", "-3"], ["up", "abc"], ["destroy", "12a"], ["up", ""],
                                  ["up", "1.5"], ["create", "7"], ["up"]])
def test_pr_stack_rejects_bad_arguments_in_one_line(bin_dir: Path, pulumi: FakeCli, args: list[str]) -> None:
    proc = run("pr-stack.sh", *args, env=script_env(bin_dir, pulumi, **BACKEND))
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("pr-stack: ") and ("NUMBER" in line or "usage" in line)
    assert pulumi.calls() == []


def test_pr_stack_destroy_of_a_missing_stack_is_a_no_op(bin_dir: Path, pulumi: FakeCli) -> None:
    pulumi.rule(r"^stack ls --json", stdout=json.dumps([{"name": "dev"}, {"name": "pr-70"}]))
    proc = run("pr-stack.sh", "destroy", "7", env=script_env(bin_dir, pulumi, **BACKEND))
    assert proc.returncode == 0, proc.stderr
    assert "pr-7 does not exist" in one_line(proc.stdout)
    assert pulumi.commands() == ["stack ls --json --non-interactive"]


def test_pr_stack_destroy_removes_resources_then_the_stack(bin_dir: Path, pulumi: FakeCli) -> None:
    pulumi.rule(r"^stack ls --json", stdout=json.dumps([{"name": "acme/pr-7"}]))
    pulumi.rule(r"^(destroy|stack rm) ")
    proc = run("pr-stack.sh", "destroy", "7", env=script_env(bin_dir, pulumi, **BACKEND))
    assert proc.returncode == 0, proc.stderr
    assert pulumi.commands()[1:] == ["destroy --yes --stack pr-7 --non-interactive",
                                     "stack rm --yes --stack pr-7 --non-interactive"]


def test_pr_stack_destroy_stops_when_the_backend_cannot_list_stacks(bin_dir: Path, pulumi: FakeCli) -> None:
    pulumi.rule(r"^stack ls --json", stdout="", rc=255, stderr="error: failed to load checkpoint\n")
    proc = run("pr-stack.sh", "destroy", "7", env=script_env(bin_dir, pulumi, **BACKEND))
    assert proc.returncode == 1 and "stack ls failed" in proc.stderr
    assert len(pulumi.calls()) == 1  # never taken for "nothing to destroy"


@pytest.mark.slow
def test_pr_stack_up_creates_from_dev_updates_and_smoke_tests(bin_dir: Path, pulumi: FakeCli,
                                                             server: ServerProcess) -> None:
    pulumi.rule(r"^stack ls --json", stdout=json.dumps([{"name": "dev"}, {"name": "prod"}]))
    pulumi.rule(r"^stack init pr-7 ")
    pulumi.rule(r"^config get --stack pr-7 --path registry\.type", stdout="local\n")
    pulumi.rule(r"^config get --stack pr-7 grafanaAdminPassword", rc=1, stderr="error: not found\n")
    pulumi.rule(r"^config set --stack pr-7 --secret grafanaAdminPassword", stdin=True)
    pulumi.rule(r"^config set ")
    pulumi.rule(r"^up ")
    outputs_rule(pulumi)
    proc = run("pr-stack.sh", "up", "7", env=script_env(bin_dir, pulumi, MODELSTACK_SMOKE_URL=server.url, **BACKEND))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("smoke: pr-7 ok:")
    assert pulumi.commands() == [
        "stack ls --json --non-interactive",
        "stack init pr-7 --secrets-provider passphrase --copy-config-from dev --non-interactive",
        "config get --stack pr-7 --path registry.type",
        "config set --stack pr-7 --path registry.manage false --non-interactive",
        "config get --stack pr-7 grafanaAdminPassword",
        "config set --stack pr-7 --secret grafanaAdminPassword --non-interactive",
        "up --yes --stack pr-7 --non-interactive --policy-pack policy/analyzer",
        "stack output --json --stack pr-7 --non-interactive",
    ]
    (secret,) = [c["stdin"] for c in pulumi.calls() if "stdin" in c]
    assert len(secret.strip()) >= 20


def test_pr_stack_up_of_an_existing_stack_rebuilds_its_config_from_the_base(bin_dir: Path,
                                                                            pulumi: FakeCli) -> None:
    pulumi.rule(r"^stack ls --json", stdout=json.dumps([{"name": "staging"}, {"name": "pr-7"}]))
    pulumi.rule(r"^config cp ")
    pulumi.rule(r"^config get --stack pr-7 --path registry\.type", stdout="ecr\n")
    pulumi.rule(r"^config get --stack pr-7 grafanaAdminPassword", stdout="kept\n")
    pulumi.rule(r"^up ", rc=3, stderr="error: update failed\n")
    env = script_env(bin_dir, pulumi, MODELSTACK_BASE_STACK="staging", **BACKEND)
    proc = run("pr-stack.sh", "up", "7", env=env)
    assert proc.returncode == 3  # pulumi's failure is the script's, and no smoke test follows
    assert pulumi.commands() == [
        "stack ls --json --non-interactive",
        "config cp --stack staging --dest pr-7 --non-interactive",
        "config get --stack pr-7 --path registry.type",
        "config get --stack pr-7 grafanaAdminPassword",
        "up --yes --stack pr-7 --non-interactive --policy-pack policy/analyzer",
    ]


# --- deploy.sh and kubeconfig.sh --------------------------------------------------------------

def test_deploy_updates_then_reports_image_and_digest(tmp_path: Path, bin_dir: Path, pulumi: FakeCli) -> None:
    pulumi.rule(r"^up ")
    outputs_rule(pulumi)
    summary = tmp_path / "summary.md"
    proc = run("deploy.sh", "prod", env=script_env(bin_dir, pulumi, GITHUB_STEP_SUMMARY=str(summary), **BACKEND))
    assert proc.returncode == 0, proc.stderr
    assert pulumi.commands()[0] == "up --yes --stack prod --non-interactive --policy-pack policy/analyzer"
    assert f"deploy: prod image {OUTPUTS['image']}" in proc.stdout
    assert f"deploy: prod modelDigest {OUTPUTS['modelDigest']}" in proc.stdout
    assert OUTPUTS["image"] in summary.read_text()


def test_deploy_fails_with_pulumi_and_reports_nothing(bin_dir: Path, pulumi: FakeCli) -> None:
    pulumi.rule(r"^up ", rc=255, stderr="error: policy violations\n")
    proc = run("deploy.sh", "dev", env=script_env(bin_dir, pulumi, **BACKEND))
    assert proc.returncode == 255 and "image" not in proc.stdout
    assert len(pulumi.calls()) == 1


def test_kubeconfig_asks_aws_for_eks_stacks_only(bin_dir: Path, pulumi: FakeCli) -> None:
    pulumi.rule(r"^config --stack ")
    settings = {"prod": {"provider": "eks", "name": "ml-prod", "region": "us-west-2", "context": "ml-prod"},
                "dev": {"provider": "kind", "context": "kind-modelstack"}}
    for stack, values in settings.items():
        for key, value in values.items():
            pulumi.rule(rf"^config get --stack {stack} --path cluster\.{key}( |$)", stdout=value + "\n")
    pulumi.rule(r"^config get ", rc=1)
    aws = FakeCli(bin_dir, "aws").rule(r"^eks update-kubeconfig ")
    proc = run("kubeconfig.sh", "dev", "prod", env=script_env(bin_dir, pulumi, aws, **BACKEND))
    assert proc.returncode == 0, proc.stderr
    assert "kubeconfig: dev: cluster provider 'kind'" in proc.stdout
    assert aws.commands() == ["eks update-kubeconfig --name ml-prod --region us-west-2 --alias ml-prod"]


def test_kubeconfig_from_a_secret_is_written_for_the_jobs_later_steps(tmp_path: Path, bin_dir: Path,
                                                                      pulumi: FakeCli) -> None:
    aws = FakeCli(bin_dir, "aws").rule(r"^eks ")
    github_env = tmp_path / "github_env"
    secret = "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
    proc = run("kubeconfig.sh", "dev", env=script_env(bin_dir, pulumi, aws, MODELSTACK_KUBECONFIG=secret,
                                                      RUNNER_TEMP=str(tmp_path), GITHUB_ENV=str(github_env),
                                                      **BACKEND))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "kubeconfig"
    assert written.read_text() == secret + "\n" and written.stat().st_mode & 0o777 == 0o600
    assert github_env.read_text() == f"KUBECONFIG={written}\n"
    assert "from the kubeconfig secret" in proc.stdout
    assert pulumi.calls() == [] and aws.calls() == []
    # Outside a workflow step the variable cannot reach later steps: one line, exit 2.
    proc = run("kubeconfig.sh", "dev", env=script_env(bin_dir, pulumi, MODELSTACK_KUBECONFIG=secret, **BACKEND))
    assert proc.returncode == 2 and "GITHUB_ENV is not" in proc.stderr
