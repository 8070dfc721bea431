"""Render `pulumi preview --diff` logs as one pull-request comment body (markdown).

Usage: preview_body.py OUT STACK EXIT_CODE LOG [STACK EXIT_CODE LOG ...]

OUT gets: the marker line first, naming the stacks (comment.sh finds the comment by it), then per stack a heading
with the `Resources:` summary or "preview failed", its errors and policy violations, and the
diff in a collapsible block. The body is trimmed to GitHub's comment limit (diffs first, each
trim said in place). Prints one summary line per stack. Stdlib only.
"""

from __future__ import annotations

import html
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

# GitHub refuses comment bodies over 65,536 characters; counted in UTF-16 units to be safe.
LIMIT = 65_536
MAX_VIOLATIONS = 50
MAX_ERRORS = 10
MAX_ITEM = 500

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# Diff-view policy lines: "    pack@v1.0.0 [mandatory] [severity: high]  policy-name  (type: name)Message".
VIOLATION = re.compile(
    r"^\s*(?:-\s+)?(?:(?P<pack>\S+@v\S*)\s+)?(?P<tags>\[[^\]]+\](?:\s\[[^\]]+\])*)\s+(?P<policy>\S+)"
    r"(?:\s+\((?P<resource>[^)]*)\))?(?P<message>.*)$"
)
LEVELS = ("[mandatory]", "[advisory]")  # exempted ones carry their level too, after [exempted: ...]
# Pulumi's change markers at the start of a resource or property line.
MARKS = {"+-": "-", "-+": "-", "+": "+", "-": "-", "~": "!"}
MARK = re.compile(r"^\s*(\+-|-\+|\+|-|~)(?!-)")


@dataclass
class Preview:
    stack: str
    exit_code: int
    log: str
    summary: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.exit_code != 0

    def headline(self) -> str:
        if self.failed:
            return f"preview failed (exit {self.exit_code})"
        changes = [s for s in self.summary if not re.fullmatch(r"\d+ unchanged", s)]
        if not self.summary:
            return "no resource summary in the output"
        return " · ".join(self.summary) if changes else f"no changes ({self.summary[-1]})"


def parse(stack: str, exit_code: int, text: str) -> Preview:
    log = ANSI.sub("", text).replace("\r\n", "\n")
    p = Preview(stack, exit_code, log.rstrip("\n"))
    lines = p.log.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == "Resources:"]
    if starts:
        for line in lines[starts[-1] + 1:]:
            if not line.startswith(" ") or not line.strip():
                break
            p.summary.append(" ".join(line.split()))
    seen: set[str] = set()
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("error:") and stripped not in p.errors:
            p.errors.append(stripped)
        m = VIOLATION.match(line)
        if m and any(level in m["tags"] for level in LEVELS):
            item = _violation(m)
            if item not in seen:
                seen.add(item)
                p.violations.append(item)
    return p


def _violation(m: re.Match[str]) -> str:
    where = f" on `{m['resource']}`" if m["resource"] else ""
    message = m["message"].strip()
    pack = f" ({m['pack']})" if m["pack"] else ""
    return _clip(f"**{m['tags']}** `{m['policy']}`{where}{pack}" + (f": {message}" if message else ""))


def _clip(text: str, limit: int = MAX_ITEM) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def diff_block(log: str) -> str:
    """Each line behind a one-character column, so GitHub's diff colouring sees Pulumi's markers."""
    out = []
    for line in log.split("\n"):
        m = MARK.match(line)
        out.append(f"{MARKS[m.group(1)] if m else ' '} {line}".rstrip())
    return "\n".join(out)


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, budget: int) -> str:
    """The longest prefix of whole lines within budget (a prefix of the first line if none fits)."""
    if units(text) <= budget:
        return text
    end = budget
    while end > 0 and units(text[:end]) > budget:
        end -= max(1, units(text[:end]) - budget)
    head = text[:end]
    return head[: head.rfind("\n")] if "\n" in head else head


def fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def section(p: Preview, diff: str, trimmed_note: str | None) -> str:
    # A mandatory violation fails the preview; violations on a passing one are advisory.
    icon = "❌" if p.failed else "⚠️" if p.violations else "✅"
    parts = [f"### {icon} `{p.stack}`: {p.headline()}", ""]
    if p.failed and p.summary:
        parts += [f"Planned before the failure: {' · '.join(p.summary)}", ""]
    for error in p.errors[:MAX_ERRORS]:
        parts.append(f"> {_clip(error)}")
    if len(p.errors) > MAX_ERRORS:
        parts.append(f"> … and {len(p.errors) - MAX_ERRORS} more errors (see the log)")
    if p.errors:
        parts.append("")
    if p.violations:
        parts += [f"**Policy violations ({len(p.violations)})**", ""]
        parts += [f"- {v}" for v in p.violations[:MAX_VIOLATIONS]]
        if len(p.violations) > MAX_VIOLATIONS:
            parts.append(f"- … and {len(p.violations) - MAX_VIOLATIONS} more (see the log)")
        parts.append("")
    n = p.log.count("\n") + 1 if p.log else 0
    mark = fence(diff)
    parts += [
        f"<details><summary>{html.escape(f'Preview output of {p.stack} ({n} lines)')}</summary>",
        "",
        f"{mark}diff",
        diff,
        mark,
        "",
    ]
    if trimmed_note:
        parts += [trimmed_note, ""]
    parts += ["</details>", ""]
    return "\n".join(parts)


def marker(stacks: list[str]) -> str:
    """One comment per set of stacks (each stack's preview job keeps its own, updated in place)."""
    return f"<!-- modelstack:preview:{','.join(stacks)} -->"


def header(stacks: list[str]) -> str:
    lines = [marker(stacks), "## Pulumi preview", ""]
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repo and run:
        lines += [f"Full output in the [workflow run]({server}/{repo}/actions/runs/{run}).", ""]
    return "\n".join(lines) + "\n"


def trim_note(shown: str, full: str) -> str:
    shown_n = shown.count("\n") + 1 if shown else 0
    return (f"_Trimmed to fit GitHub's comment limit: {shown_n:,} of {full.count(chr(10)) + 1:,} lines shown; "
            "the full output is in the job log._")


def render(previews: list[Preview], limit: int = LIMIT) -> str:
    stacks = [p.stack for p in previews]
    diffs = [diff_block(p.log) for p in previews]
    body = header(stacks) + "\n".join(section(p, d, None) for p, d in zip(previews, diffs, strict=True))
    if units(body) <= limit:
        return body
    # Over the limit: what is not a diff stays; the diffs share the rest, the short ones whole.
    worst_note = trim_note("x\n" * 99_999, "x\n" * 999_999)
    fixed = units(header(stacks)) + sum(units(section(p, "", worst_note)) + 1 for p in previews)
    budget = max(0, limit - fixed - 64)
    kept: dict[int, str] = {}
    for i in sorted(range(len(diffs)), key=lambda i: units(diffs[i])):
        share = budget // (len(diffs) - len(kept))
        kept[i] = cut(diffs[i], share)
        budget -= units(kept[i])
    body = header(stacks) + "\n".join(
        section(p, kept[i], trim_note(kept[i], diffs[i]) if kept[i] != diffs[i] else None)
        for i, p in enumerate(previews)
    )
    if units(body) > limit:  # only if the headings alone are too long: cut the tail, say so
        note = "\n\n_Comment trimmed to fit GitHub's limit; the full output is in the job log._\n"
        body = cut(body, limit - units(note)) + note
    return body


def main(argv: list[str]) -> int:
    if len(argv) < 4 or (len(argv) - 1) % 3:
        print("usage: preview_body.py OUT STACK EXIT_CODE LOG [STACK EXIT_CODE LOG ...]", file=sys.stderr)
        return 2
    out, rest = Path(argv[0]), argv[1:]
    previews = []
    for stack, code, log in zip(rest[0::3], rest[1::3], rest[2::3], strict=True):
        text = Path(log).read_text(encoding="utf-8", errors="replace") if Path(log).is_file() else ""
        previews.append(parse(stack, int(code), text))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(previews), encoding="utf-8")
    for p in previews:
        print(f"preview: {p.stack}: {p.headline()}" + (f"; {len(p.violations)} policy violation(s)"
                                                        if p.violations else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
