"""The documented names are the real ones: settings in docs/serving.md, metrics in serving/metrics.py."""

from __future__ import annotations

from pathlib import Path

import serving.metrics
from serving.metrics import Metrics
from serving.settings import ENV_PREFIX, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in text, f"{name} missing from {DOC.name}"


def test_every_metric_is_in_the_metrics_docstring() -> None:
    doc = serving.metrics.__doc__ or ""
    names = set()
    for family in Metrics().registry.collect():
        if family.name.startswith("modelstack_"):
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    assert len(names) >= 10
    for name in names:
        assert name in doc, f"{name} is not documented in serving/metrics.py"
        assert name in DOC.read_text() or name.removesuffix("_total") in DOC.read_text()
