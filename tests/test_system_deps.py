"""scripts/install-system-deps.sh (what `make test` runs first): a machine that has every package does
nothing; without root or sudo it names the missing package and the command, in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-system-deps.sh"
PRESENT = ("bash", "id", "promtool", "prometheus", "docker-registry", "openssl", "shellcheck", "skopeo",
           "envsubst")  # wrk left out


def as_unprivileged(cmd: list[str], env: dict[str, str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", "nobody", "--", "/usr/bin/env", *(f"{k}={v}" for k, v in env.items()), *cmd]


def test_a_machine_with_every_package_does_nothing() -> None:
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_without_root_or_sudo_it_names_the_missing_package_and_the_command() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # readable by the unprivileged user, unlike pytest's tmp_path
        Path(tmp).chmod(0o755)
        assert_wrk_is_named_as_missing(Path(tmp) / "bin")


def assert_wrk_is_named_as_missing(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for tool in PRESENT:
        # The Debian packages' own files: a PATH with the tools' cache first (cluster.sh env) would give a
        # Prometheus under root's home, which the unprivileged user cannot run.
        found = shutil.which(tool, path="/usr/bin:/bin:/usr/sbin:/sbin")
        assert found, f"{tool} is not installed: run scripts/install-system-deps.sh"
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir)}  # no sudo, no wrk
    proc = subprocess.run(as_unprivileged([str(bin_dir / "bash"), str(SCRIPT)], env), env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr == ("install-system-deps: missing Debian packages wrk; "
                           "as root run: apt-get install -y wrk\n")
