"""checkov's Kubernetes checks, run offline once over a multi-document manifest file.

checkov lives in its own virtualenv (its pins clash with ours): found through
$CHECKOV, then `.venv-checkov/bin/checkov` in the repository, then PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.pulumi_harness import ROOT

# The checks the serving manifests must pass (ids as in checkov's Kubernetes policy index).
REQUIRED = ("CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_14",
            "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_29", "CKV_K8S_30", "CKV_K8S_31",
            "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_40", "CKV_K8S_43")


def checkov_binary() -> str | None:
    for candidate in (os.environ.get("CHECKOV"), str(ROOT / ".venv-checkov" / "bin" / "checkov"),
                      shutil.which("checkov")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_checkov(binary: str, manifest_file: Path) -> dict[str, Any]:
    """checkov's JSON report: passed_checks, failed_checks, skipped_checks (each with check_id, resource)."""
    proc = subprocess.run(
        [binary, "-f", str(manifest_file), "--framework", "kubernetes", "--skip-download",
         "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"checkov failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    if isinstance(report, list):  # one entry per framework
        report = next(r for r in report if r.get("check_type") == "kubernetes")
    return report.get("results", {})
