"""Shared fixtures: the Pulumi program under mocks, per stack file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.pulumi_harness import ProgramRun, run_program  # noqa: E402

# What an operator sets with `pulumi config set --secret` (never committed).
OPERATOR_SECRETS = {"grafanaAdminPassword": "not-a-real-password-7f3a"}


@pytest.fixture
def program():
    """Call as program(stack, config=None, secrets=None) -> ProgramRun."""

    def _run(stack: str, config=None, secrets=None, preview: bool = False, raise_errors: bool = True) -> ProgramRun:
        return run_program(stack, config=config, secrets=OPERATOR_SECRETS if secrets is None else secrets,
                           preview=preview, raise_errors=raise_errors)

    return _run
