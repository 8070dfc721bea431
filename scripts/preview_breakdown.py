"""Where the time of a no-op `pulumi preview` and a no-op `pulumi up` goes, from the engine's own traces.

    eval "$(tools/build.sh)"; eval "$(local-cluster/cluster.sh env)"   # the CLI and the cluster
    .venv/bin/python -m scripts.preview_breakdown [STACK] [--no-policy] [--runs N]

Runs `pulumi preview --expect-no-changes` and `pulumi up --yes --expect-no-changes` on STACK (default
local) as scripts/pulumi.sh does (its state, passphrase and working copy of the stack file, the policy
pack unless --no-policy), each with `--otel-traces file://...`, and prints one table: the wall time of
the command and, for each pass of the engine (`up` previews first, then updates), its parts. Nothing
must change: a stack with pending changes fails `--expect-no-changes`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICY = ["--policy-pack", "policy/analyzer"]


@dataclass
class Span:
    name: str
    start: float  # seconds since the CLI's root span began
    end: float
    attrs: dict[str, str]

    @property
    def seconds(self) -> float:
        return self.end - self.start


def read_spans(path: Path) -> list[Span]:
    """The CLI's spans (OTLP JSON, one export per line); plugins' server-side copies are left out."""
    raw = []
    for line in path.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            service = {a["key"]: a["value"].get("stringValue") for a in rs["resource"].get("attributes", [])}
            if service.get("service.name") != "pulumi-cli":
                continue
            for scope in rs["scopeSpans"]:
                for s in scope["spans"]:
                    attrs = {a["key"]: str(next(iter(a["value"].values()), "")) for a in s.get("attributes", [])}
                    raw.append((s["name"], int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"]), attrs))
    root = min(r[1] for r in raw if r[0] == "pulumi")
    return sorted((Span(n, (a - root) / 1e9, (b - root) / 1e9, attrs) for n, a, b, attrs in raw),
                  key=lambda s: s.start)


def total(spans: list[Span], *names: str, kind: str | None = None) -> float:
    return sum(s.seconds for s in spans if s.name.split("/")[-1] in names and (not kind or s.attrs.get("kind") == kind))


def breakdown(spans: list[Span]) -> list[tuple[str, float]]:
    """(part, seconds) rows: CLI start-up, then each engine pass (`pulumi-plan`) split by what ran in it."""
    plans = [s for s in spans if s.name == "pulumi-plan"]
    root = next(s for s in spans if s.name == "pulumi")
    rows = [("CLI start, state and config", plans[0].start)]
    for label, plan in zip(("preview pass", "update pass"), plans, strict=False):
        inside = [s for s in spans if plan.start <= s.start < plan.end]
        program = next(s for s in inside if s.name == "run-program")
        registers = [s for s in inside if s.name.endswith("ResourceMonitor/RegisterResource")]
        first = registers[0].start if registers else program.end
        # The program's last call; after it the SDK flushes its own spans (so only while tracing) and exits.
        last = max((s.end for s in inside if s.name.endswith("SignalAndWaitForShutdown")), default=program.end)
        rows += [(f"{label}: {part}", seconds) for part, seconds in [
            ("total", plan.seconds),
            ("required plugins (language host: pip list)", total(inside, "GetRequiredPlugins", "GetRequiredPackages")),
            ("policy pack start (process + handshake)", total(inside, "newPlugin", kind="analyzer")),
            ("program start to its 1st resource", first - program.start),
            ("program's registrations", last - first),
            ("  in them: providers' start + Configure", total(inside, "newPlugin", kind="resource")
             + total(inside, "Configure")),
            ("  in them: policy analysis", total(inside, "Analyze", "Remediate")),
            ("stack policies after the program", total(inside, "AnalyzeStack")),
            ("program exit (its trace flush: tracing only)", program.end - last),
        ]]
    rows.append(("after the last pass (state, summary, shutdown)", root.end - plans[-1].end))
    return rows


def run(command: list[str], trace: Path, env: dict[str, str]) -> tuple[float, list[Span]]:
    start = time.monotonic()
    proc = subprocess.run([*command, "--otel-traces", f"file://{trace}"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-3000:]}")
    return wall, read_spans(trace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", nargs="?", default="local")
    parser.add_argument("--no-policy", action="store_true", help="without the policy pack (to compare)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each command; the fastest is shown")
    args = parser.parse_args()

    # The defaults of scripts/pulumi.sh: state and passphrase under .modelstack/, the stack file's working copy.
    env = dict(os.environ)
    env.setdefault("PULUMI_BACKEND_URL", f"file://{REPO / '.modelstack' / 'state'}")
    if "PULUMI_CONFIG_PASSPHRASE" not in env:
        env.setdefault("PULUMI_CONFIG_PASSPHRASE_FILE", str(REPO / ".modelstack" / "passphrase"))
    work = REPO / ".modelstack" / f"Pulumi.{args.stack}.yaml"
    common = ["--stack", args.stack, "--non-interactive", *(["--config-file", str(work)] if work.is_file() else []),
              *([] if args.no_policy else POLICY)]
    commands = {"preview": ["pulumi", "preview", "--expect-no-changes", *common],
                "up": ["pulumi", "up", "--yes", "--expect-no-changes", *common]}

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in commands.items():
            runs = [run(command, Path(tmp) / f"{name}-{i}.json", env) for i in range(args.runs)]
            results[name] = min(runs, key=lambda r: r[0])

    policy = "off" if args.no_policy else "on"
    print(f"stack {args.stack}, policy pack {policy}; seconds (fastest of {args.runs})")
    print(f"{'':62} {'preview':>8} {'up':>8}")
    print(f"{'wall time of the command':62} {results['preview'][0]:8.2f} {results['up'][0]:8.2f}")
    rows = {name: breakdown(spans) for name, (_, spans) in results.items()}
    labels = list(dict.fromkeys(label for r in rows.values() for label, _ in r))
    for label in labels:
        cells = [dict(rows[name]).get(label) for name in ("preview", "up")]
        print(f"{label:62} " + " ".join(f"{c:8.2f}" if c is not None else f"{'':8}" for c in cells))


if __name__ == "__main__":
    main()
