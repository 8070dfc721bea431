"""Pulumi.yaml and the stack files follow Pulumi's documented schema and keep secrets out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.pulumi_harness import ROOT

# Pulumi's project schema: a config key is a plain default (string, integer,
# boolean) or a declaration with these fields and one of these types.
DECLARATION_FIELDS = {"type", "items", "description", "secret", "default"}
SIMPLE_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}


def _project() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def test_project_is_python_in_a_venv():
    project = _project()
    assert project["name"] == "modelstack"
    assert project["description"]
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"


def _check_items(items: dict, where: str) -> None:
    assert isinstance(items, dict) and "type" in items, f"{where}.items needs a type"
    assert items["type"] in SIMPLE_TYPES, f"{where}.items.type {items['type']!r}"
    if items["type"] == "array":
        _check_items(items.get("items"), f"{where}.items")


def test_project_config_uses_only_documented_types():
    for key, decl in _project()["config"].items():
        if not isinstance(decl, dict):
            assert isinstance(decl, str | int | bool), f"{key}: a plain default must be a scalar"
            continue
        assert set(decl) <= DECLARATION_FIELDS, f"{key}: fields {set(decl) - DECLARATION_FIELDS} not in the schema"
        assert decl["type"] in SIMPLE_TYPES, f"{key}: type {decl['type']!r} is not string/integer/boolean/array"
        if decl["type"] == "array":
            _check_items(decl.get("items"), key)
        if "default" in decl:
            assert isinstance(decl["default"], SIMPLE_TYPES[decl["type"]]), f"{key}: default does not match type"


def test_declared_keys_without_default_are_set_in_every_stack():
    """The CLI refuses a stack that lacks a declared key with no default."""
    required = [k for k, d in _project()["config"].items() if isinstance(d, dict) and "default" not in d]
    for stack in ("dev", "prod"):
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        for key in required:
            assert f"modelstack:{key}" in config, f"Pulumi.{stack}.yaml lacks {key}"


def test_declared_keys_match_their_type_in_every_stack():
    declared = {k: d for k, d in _project()["config"].items() if isinstance(d, dict)}
    for stack in ("dev", "prod"):
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        for key, decl in declared.items():
            if f"modelstack:{key}" in config:
                assert isinstance(config[f"modelstack:{key}"], SIMPLE_TYPES[decl["type"]]), f"{stack}: {key}"


def test_prod_holds_no_secret_values():
    text = (ROOT / "Pulumi.prod.yaml").read_text()
    config = yaml.safe_load(text)["config"]
    assert "secure" not in json.dumps(config), "prod stack file holds an encrypted value; set it per deployment"
    for key in ("grafanaAdminPassword", "registryPassword"):
        assert f"modelstack:{key}" not in config


def test_program_does_not_import_torch():
    """Importing torch costs seconds on every preview; only the optimize provider may."""
    code = (
        "import sys\n"
        "from tests.pulumi_harness import run_program\n"
        "run = run_program('dev', secrets={'grafanaAdminPassword': 'x'})\n"
        "assert run.resources\n"
        "heavy = sorted(m for m in ('torch', 'onnxruntime', 'sklearn') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the program imported {out.stdout.strip()}"
