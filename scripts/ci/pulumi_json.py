"""Answers the CI scripts' questions about JSON that the Pulumi CLI printed (read on stdin).

Usage:
  pulumi stack ls --json | pulumi_json.py has-stack NAME    exit 0 if NAME is listed, 1 if not
  pulumi stack output --json | pulumi_json.py get KEY...     print each output, one per line

Stdlib only (it runs where the project's venv is not installed). Exit 3 with one line when the
input is not what the CLI prints, so a caller never mistakes garbage for an answer.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

USAGE = "usage: pulumi_json.py has-stack NAME | get KEY..."


def fail(code: int, message: str) -> NoReturn:
    print(f"pulumi_json: {message}", file=sys.stderr)
    raise SystemExit(code)


def has_stack(listing: object, name: str) -> bool:
    if not isinstance(listing, list):
        fail(3, "expected the JSON list `pulumi stack ls --json` prints")
    names = {s.get("name") for s in listing if isinstance(s, dict)}
    # Pulumi Cloud lists stacks as org/name or org/project/name; a bare NAME matches the tail.
    return name in names or ("/" not in name and any(str(n).endswith("/" + name) for n in names))


def get(outputs: object, keys: list[str]) -> list[str]:
    if not isinstance(outputs, dict):
        fail(3, "expected the JSON object `pulumi stack output --json` prints")
    missing = [k for k in keys if outputs.get(k) in (None, "")]
    if missing:
        fail(1, f"stack output {', '.join(missing)} missing (have: {', '.join(sorted(outputs)) or 'none'})")
    return [v if isinstance(v, str) else json.dumps(v) for v in (outputs[k] for k in keys)]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("has-stack", "get") or (argv[0] == "has-stack" and len(argv) != 2):
        fail(2, USAGE)
    try:
        data = json.loads(sys.stdin.read())
    except json.JSONDecodeError as exc:
        fail(3, f"stdin is not JSON ({exc.msg} at line {exc.lineno})")
    if argv[0] == "has-stack":
        return 0 if has_stack(data, argv[1]) else 1
    print("\n".join(get(data, argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
