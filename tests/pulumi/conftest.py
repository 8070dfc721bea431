"""The stack files point at the example models and (local) the image's wheelhouse: make them once."""

from __future__ import annotations

import pytest

from tests.pulumi_harness import make_stack_files_inputs


@pytest.fixture(scope="session", autouse=True)
def example_models() -> None:
    make_stack_files_inputs()
