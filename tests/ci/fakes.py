"""Stand-ins for what the CI scripts talk to: a fake CLI on PATH (pulumi, kubectl, aws) that
answers from rules and records its calls, and a fake GitHub REST API on 127.0.0.1.

Only outside tools are faked; the scripts under test run for real.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]

# The fake tool: the first rule whose regex matches the joined argv decides stdout, stderr, exit code.
_FAKE = r'''
import json, os, re, sys, time
spec = json.load(open(os.environ["FAKE_SPEC_" + os.path.basename(sys.argv[0]).upper()]))
argv = sys.argv[1:]
entry = {"argv": argv, "pid": os.getpid()}
rule = next((r for r in spec["rules"] if re.search(r["match"], " ".join(argv))), None)
if rule and rule.get("stdin"):
    entry["stdin"] = sys.stdin.read()
with open(spec["log"], "a") as log:
    log.write(json.dumps(entry) + "\n")
if rule is None:
    sys.stderr.write("fake %s: no rule for: %s\n" % (os.path.basename(sys.argv[0]), " ".join(argv)))
    sys.exit(97)
if rule.get("stdout_file"):
    sys.stdout.write(open(rule["stdout_file"], encoding="utf-8").read())
sys.stdout.write(rule.get("stdout", ""))
sys.stderr.write(rule.get("stderr", ""))
sys.stdout.flush()
if rule.get("sleep"):
    time.sleep(rule["sleep"])
sys.exit(rule.get("rc", 0))
'''


class FakeCli:
    """An executable NAME in bin_dir; add rules, read calls. Unmatched calls exit 97."""

    def __init__(self, bin_dir: Path, name: str):
        self.name = name
        self.spec_path = bin_dir / f"{name}.spec.json"
        self.log_path = bin_dir / f"{name}.calls.jsonl"
        self.rules: list[dict[str, Any]] = []
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\n{_FAKE}")
        exe.chmod(0o755)
        self.log_path.write_text("")
        self._save()

    @property
    def env(self) -> dict[str, str]:
        return {f"FAKE_SPEC_{self.name.upper()}": str(self.spec_path)}

    def rule(self, match: str, stdout: str = "", rc: int = 0, **extra: Any) -> FakeCli:
        self.rules.append({"match": match, "stdout": stdout, "rc": rc, **extra})
        self._save()
        return self

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def commands(self) -> list[str]:
        return [" ".join(c["argv"]) for c in self.calls()]

    def _save(self) -> None:
        self.spec_path.write_text(json.dumps({"rules": self.rules, "log": str(self.log_path)}))


def script_env(bin_dir: Path, *fakes: FakeCli, **extra: str) -> dict[str, str]:
    """The caller's environment without CI, Pulumi or GitHub settings, the fakes first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "PULUMI_", "MODELSTACK_", "FAKE_SPEC_", "AWS_", "KUBECONFIG"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    for fake in fakes:
        env.update(fake.env)
    env.update(extra)
    return env


@dataclass
class Comment:
    id: int
    body: str


@dataclass
class FakeGitHub:
    """Issue comments of one PR, served page by page with Link headers, like api.github.com."""

    repo: str = "acme/models"
    number: int = 7
    token: str = "test-token"
    page_size: int = 2
    comments: list[Comment] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    next_link_override: str | None = None  # a Link "next" to hand out instead of the real one
    url: str = ""

    def __enter__(self) -> FakeGitHub:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any, link: str | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if link:
                    self.send_header("Link", f'<{link}>; rel="next", <{api.url}/last>; rel="last"')
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                api.requests.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._send(401, {"message": "Bad credentials"})
                parts = urlsplit(self.path)
                base = f"/repos/{api.repo}/issues"
                if parts.path == f"{base}/{api.number}/comments" and method == "GET":
                    page = int(parse_qs(parts.query).get("page", ["1"])[0])
                    start = (page - 1) * api.page_size
                    chunk = api.comments[start:start + api.page_size]
                    more = start + api.page_size < len(api.comments)
                    link = None
                    if more:
                        link = api.next_link_override or f"{api.url}{parts.path}?per_page=100&page={page + 1}"
                    return self._send(200, [api.render(c) for c in chunk], link)
                if parts.path == f"{base}/{api.number}/comments" and method == "POST":
                    comment = Comment(max((c.id for c in api.comments), default=100) + 1, body["body"])
                    api.comments.append(comment)
                    return self._send(201, api.render(comment))
                m = re.fullmatch(rf"{base}/comments/(\d+)", parts.path)
                if m and method == "PATCH":
                    for comment in api.comments:
                        if comment.id == int(m.group(1)):
                            comment.body = body["body"]
                            return self._send(200, api.render(comment))
                return self._send(404, {"message": "Not Found"})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def render(self, c: Comment) -> dict[str, Any]:
        html_url = f"https://github.com/{self.repo}/pull/{self.number}#issuecomment-{c.id}"
        return {"id": c.id, "body": c.body, "html_url": html_url}

    def env(self) -> dict[str, str]:
        return {"GITHUB_TOKEN": self.token, "GITHUB_REPOSITORY": self.repo, "PR_NUMBER": str(self.number),
                "GITHUB_API_URL": self.url}
