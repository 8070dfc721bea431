"""Image references a stack names: a loopback registry's tag is pinned to the digest a real registry
(Debian's docker-registry) serves for it; what cannot be pinned is one line saying how to fix it, and the
config loader reports it as a config error of the key."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import image_ref
from components.image_ref import ImageRefError, pin
from tests.processes import free_port, start_docker_registry, stop

PINNED = "docker.io/prom/prometheus:v3.5.0@sha256:" + "a" * 64


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, host = start_docker_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield host
    finally:
        stop(proc)


def put(url: str, body: bytes, content_type: str) -> urllib.request.Request:
    return urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": content_type})


def push_image(host: str, repository: str, tag: str) -> str:
    """A one-config, no-layer OCI image pushed through the distribution API; returns its manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "config": {}}).encode()
    config_digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    start = urllib.request.Request(f"http://{host}/v2/{repository}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start, timeout=10) as response:
        location = response.headers["Location"]
    upload = location if location.startswith("http") else f"http://{host}{location}"
    sep = "&" if "?" in upload else "?"
    urllib.request.urlopen(put(f"{upload}{sep}digest={config_digest}", config, "application/octet-stream"),
                           timeout=10).close()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [],
    }).encode()
    urllib.request.urlopen(put(f"http://{host}/v2/{repository}/manifests/{tag}", manifest,
                               "application/vnd.oci.image.manifest.v1+json"), timeout=10).close()
    return f"sha256:{hashlib.sha256(manifest).hexdigest()}"


def test_a_pinned_reference_is_kept_as_it_is_without_asking_anyone() -> None:
    assert pin(PINNED) == PINNED


def test_a_loopback_tag_is_pinned_to_what_the_registry_serves_and_follows_the_tag(registry: str) -> None:
    first = push_image(registry, "modelstack-system/prometheus", "debian-bookworm")
    ref = f"{registry}/modelstack-system/prometheus:debian-bookworm"
    assert pin(ref) == f"{ref}@{first}"
    push_image(registry, "modelstack-system/prometheus", "other")  # another tag changes nothing
    assert pin(ref) == f"{ref}@{first}"


def test_a_tag_the_registry_does_not_have_names_the_tag_and_who_pushes_it(registry: str) -> None:
    with pytest.raises(ImageRefError, match=r"has no 'modelstack-system/absent:1' \(local-cluster/cluster.sh up"):
        pin(f"{registry}/modelstack-system/absent:1")


def test_a_registry_that_does_not_answer_says_how_to_start_it() -> None:
    with pytest.raises(ImageRefError, match=r"does not answer .*start it \(local-cluster/cluster.sh up\) or pin"):
        pin(f"127.0.0.1:{free_port()}/modelstack-system/prometheus:debian-bookworm", timeout_s=2)


@pytest.mark.parametrize("ref", ["docker.io/prom/prometheus:v3.5.0", "registry.example:5000/p:1",
                                 "127.0.0.1:5000/no-tag"])
def test_a_tag_elsewhere_must_be_pinned_by_digest(ref: str) -> None:
    with pytest.raises(ImageRefError, match=r"has no digest; pin it as REPOSITORY:TAG@sha256:DIGEST"):
        pin(ref)


def test_the_config_loader_reports_an_unpinnable_image_as_an_error_of_its_key(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Path) -> None:
    from components.config import ConfigError, _pinned_images, parse_stack_config
    from tests.pulumi_harness import engine_config, stack_config

    values = stack_config("local")
    values["modelstack:monitoring"] = {**values["modelstack:monitoring"],
                                       "prometheusImage": f"127.0.0.1:{free_port()}/p:1"}
    cfg = parse_stack_config(engine_config(values), project="modelstack", stack="local",
                             project_dir=Path(__file__).resolve().parents[2], check_files=False)
    monkeypatch.setattr(image_ref, "pin", lambda ref: pin(ref, timeout_s=2))
    with pytest.raises(ConfigError) as info:
        _pinned_images(cfg)
    (line,) = info.value.problems
    assert line.startswith("Pulumi.local.yaml: modelstack:monitoring.prometheusImage: the registry 127.0.0.1:")
