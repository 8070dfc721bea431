"""Errors the pipeline raises: one clear line that names the problem."""

from __future__ import annotations


class OptimizeError(Exception):
    """Bad input or a stage that cannot run; str(err) is a one-line reason."""

    def __init__(self, message: str) -> None:
        # Callers print this as the CLI's single line, so keep it on one line.
        super().__init__(" ".join(str(message).split()))


class GateFailed(OptimizeError):
    """The optimized model missed the recipe's accuracy gate; nothing is published."""
