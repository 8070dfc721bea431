"""scripts/stack_config.py: a stack's working copy merges the tracked file with this machine's own
values, three ways, and the tracked files are never written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts import stack_config

DEV = {"config": {"modelstack:recipe": "auto",
                  "modelstack:registry": {"type": "local", "port": 5001},
                  "modelstack:serving": {"replicas": 1, "cpu": "500m"}}}  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stack_config, "ROOT", tmp_path)
    monkeypatch.setattr(stack_config, "WORK", tmp_path / ".modelstack")
    (tmp_path / "Pulumi.dev.yaml").write_text("# the team's\n" + yaml.safe_dump(DEV, sort_keys=False))
    return tmp_path


def working(stack: str) -> dict:
    return yaml.safe_load(stack_config.working_copy(stack).read_text())


def edit(path: Path, change) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_the_first_copy_is_the_tracked_file_and_the_tracked_file_is_not_written(project: Path) -> None:
    tracked = (project / "Pulumi.dev.yaml").read_text()
    assert stack_config.sync("dev") == project / ".modelstack" / "Pulumi.dev.yaml"
    assert working("dev") == DEV
    assert (project / "Pulumi.dev.yaml").read_text() == tracked


def test_a_new_stack_takes_the_salt_pulumi_wrote_and_drops_the_old_stacks_secrets(project: Path) -> None:
    stack_config.sync("dev")
    copy = stack_config.working_copy("dev")
    edit(copy, lambda d: d.update(encryptionsalt="v1:old") or d["config"].update(
        {"modelstack:grafanaAdminPassword": {"secure": "v1:under-the-old-salt"}}))
    created = project / "created.yaml"
    created.write_text("encryptionsalt: v1:new\n")
    stack_config.sync("dev", init_from=created)
    assert working("dev") == {"encryptionsalt": "v1:new", **DEV}


def test_tracked_changes_arrive_and_this_machines_values_stay(project: Path, capsys) -> None:
    stack_config.sync("dev")
    copy = stack_config.working_copy("dev")

    def mine(d: dict) -> None:
        d["encryptionsalt"] = "v1:salt"
        d["config"]["modelstack:grafanaAdminPassword"] = {"secure": "v1:secret"}
        d["config"]["modelstack:serving"]["cpu"] = "250m"  # an override: `pulumi config set --path`

    edit(copy, mine)

    def theirs(d: dict) -> None:
        d["config"]["modelstack:serving"]["replicas"] = 3  # pulled from git
        d["config"]["modelstack:serving"]["cpu"] = "400m"  # changed on both sides: this machine's stays
        d["config"]["modelstack:recipe"] = "int8-dynamic"
        del d["config"]["modelstack:registry"]["port"]

    edit(project / "Pulumi.dev.yaml", theirs)
    stack_config.sync("dev")
    assert working("dev") == {"encryptionsalt": "v1:salt", "config": {
        "modelstack:recipe": "int8-dynamic", "modelstack:registry": {"type": "local"},
        "modelstack:serving": {"replicas": 3, "cpu": "250m"},
        "modelstack:grafanaAdminPassword": {"secure": "v1:secret"}}}  # fmt: skip
    assert "note: modelstack:serving.cpu: this machine's value is kept" in capsys.readouterr().err
    # Set back to the tracked value, the key follows the file again.
    edit(copy, lambda d: d["config"]["modelstack:serving"].update(cpu="400m"))
    stack_config.sync("dev")
    edit(project / "Pulumi.dev.yaml", lambda d: d["config"]["modelstack:serving"].update(cpu="1"))
    stack_config.sync("dev")
    assert working("dev")["config"]["modelstack:serving"]["cpu"] == "1"


def test_a_stack_without_a_file_starts_from_dev_and_pushes_to_devs_registry(project: Path) -> None:
    stack_config.sync("pr-7")
    assert not (project / "Pulumi.pr-7.yaml").exists()
    config = working("pr-7")["config"]
    assert config["modelstack:registry"] == {"type": "local", "port": 5001, "manage": False}
    assert config["modelstack:serving"] == DEV["config"]["modelstack:serving"]


def test_a_salt_in_a_tracked_file_is_not_copied(project: Path) -> None:
    # An old `make up` wrote this machine's salt into the tracked file: it is not the team's.
    edit(project / "Pulumi.dev.yaml", lambda d: d.update(encryptionsalt="v1:someone-elses"))
    stack_config.sync("dev")
    assert "encryptionsalt" not in working("dev")


def test_a_working_copy_that_is_not_a_mapping_is_one_line(project: Path) -> None:
    copy = stack_config.working_copy("dev")
    copy.parent.mkdir()
    copy.write_text("- a list\n")
    with pytest.raises(SystemExit, match=r"Pulumi.dev.yaml is not a YAML mapping; delete it"):
        stack_config.sync("dev")
