"""Create or update the one pull-request comment whose body starts with FILE's first line.

Usage: pr_comment.py FILE   (run by scripts/ci/comment.sh)
env: GITHUB_TOKEN, GITHUB_REPOSITORY (owner/name), PR_NUMBER, GITHUB_API_URL (default
https://api.github.com). FILE's first line is the marker (an HTML comment, invisible on GitHub).

Lists the PR's issue comments (every page, via the Link header), PATCHes the first whose body
starts with the marker, else POSTs a new one: one comment per PR, updated in place. Exit 2 with
one line on a caller's mistake, 1 with one line when GitHub refuses. Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

LIMIT = 65_536  # GitHub's maximum comment body
TIMEOUT_S = 30
NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


class Failure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class GitHub:
    def __init__(self, api: str, token: str):
        self.api = api.rstrip("/")
        self.token = token

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[Any, str | None]:
        """JSON response and the Link header's next page."""
        if not url.startswith(self.api + "/"):  # never send the token anywhere else
            raise Failure(1, f"refusing to follow a link outside {self.api}: {url}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "modelstack-ci",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                payload = json.loads(resp.read() or b"null")
                link = NEXT.search(resp.headers.get("Link") or "")
                return payload, link.group(1) if link else None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):  # GitHub's {"message": ...}, if it is one
                detail = json.loads(detail).get("message", detail)
            raise Failure(1, f"{method} {url}: HTTP {exc.code}: {' '.join(str(detail).split())[:300]}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Failure(1, f"{method} {url}: {reason}") from None
        except json.JSONDecodeError:
            raise Failure(1, f"{method} {url}: the response is not JSON") from None


def settings() -> tuple[str, str, str, int]:
    env = {k: os.environ.get(k, "").strip() for k in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "PR_NUMBER")}
    for key, value in env.items():
        if not value:
            raise Failure(2, f"{key} is not set")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", env["GITHUB_REPOSITORY"]):
        raise Failure(2, f"GITHUB_REPOSITORY must be owner/name, got {env['GITHUB_REPOSITORY']!r}")
    if not re.fullmatch(r"[1-9][0-9]*", env["PR_NUMBER"]):
        raise Failure(2, f"PR_NUMBER must be a positive integer, got {env['PR_NUMBER']!r}")
    api = os.environ.get("GITHUB_API_URL", "").strip() or "https://api.github.com"
    return api, env["GITHUB_TOKEN"], env["GITHUB_REPOSITORY"], int(env["PR_NUMBER"])


def read_body(path: str) -> tuple[str, str]:
    try:
        body = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(2, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    marker = body.split("\n", 1)[0].strip()
    if not re.fullmatch(r"<!--.+-->", marker):
        raise Failure(2, f"{path}: the first line must be a marker like <!-- name -->, got {marker[:80]!r}")
    if len(body.encode("utf-16-le")) // 2 > LIMIT:
        raise Failure(2, f"{path}: body is over GitHub's {LIMIT:,}-character comment limit")
    return marker, body


def upsert(gh: GitHub, repo: str, number: int, marker: str, body: str) -> tuple[str, dict[str, Any]]:
    url: str | None = f"{gh.api}/repos/{repo}/issues/{number}/comments?per_page=100"
    while url:
        page, url = gh.call("GET", url)
        if not isinstance(page, list):
            raise Failure(1, "listing the comments did not return a list")
        for comment in page:
            if str(comment.get("body") or "").lstrip().startswith(marker):
                updated, _ = gh.call("PATCH", f"{gh.api}/repos/{repo}/issues/comments/{comment['id']}",
                                     {"body": body})
                return "updated", updated
    created, _ = gh.call("POST", f"{gh.api}/repos/{repo}/issues/{number}/comments", {"body": body})
    return "created", created


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 1:
            raise Failure(2, "usage: scripts/ci/comment.sh FILE")
        api, token, repo, number = settings()
        marker, body = read_body(argv[0])
        action, comment = upsert(GitHub(api, token), repo, number, marker, body)
    except Failure as exc:
        print(f"comment: {exc}", file=sys.stderr)
        return exc.code
    where = (comment.get("html_url") or f"id {comment.get('id')}") if isinstance(comment, dict) else ""
    print(f"comment: {action} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
