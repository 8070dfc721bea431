"""test_program.py runs the program on each stack file, which points at the example models."""

from __future__ import annotations

import pytest

from tests.pulumi_harness import make_stack_files_inputs


@pytest.fixture(scope="session", autouse=True)
def example_models() -> None:
    make_stack_files_inputs()
