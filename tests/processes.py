"""Stopping the processes tests start: SIGTERM first (they drain), SIGKILL if they hang."""

from __future__ import annotations

import os
import signal
import subprocess


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> int | None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode
