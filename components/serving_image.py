"""ServingImage: the inference image for one optimized model, built and pushed.

The build context (server code + Dockerfile + the verified model artifact) is
laid out by serving.context.assemble in a content-addressed directory under
.modelstack/contexts, once the model digest is known. pulumi-docker-build's
Image (BuildKit, registry cache) builds and pushes it; it builds during
preview when its inputs are known, so a broken Dockerfile shows up in review,
and unchanged inputs do not rebuild. The tag carries the model digest and the
output `ref` pins the pushed image by digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build

from artifacts.store import open_store

# Imported here, not where used: applies run after the engine's shim has taken the project directory off
# sys.path again, so a project module imported inside one is not found (seen under the real engine).
from serving.context import MARKER, assemble, source_key

CONTEXTS_DIR = ".modelstack/contexts"
MODELS_DIR = ".modelstack/models"


@dataclass(frozen=True)
class RegistryLogin:
    address: pulumi.Input[str]
    username: pulumi.Input[str]
    password: pulumi.Input[str]  # a secret Output


@dataclass(frozen=True)
class ServingImageArgs:
    repository: pulumi.Input[str]
    model_digest: pulumi.Input[str]
    store_uri: str
    project_dir: str
    cache_repository: pulumi.Input[str] | None = None
    store_region: str | None = None
    store_endpoint: str | None = None
    gpu: bool = False
    login: RegistryLogin | None = None
    registry_cache: bool = True
    """BuildKit's layer cache in the registry, next to the image."""
    builder: str | None = None
    """A buildx builder by name (docker-container, kubernetes or remote driver); by default the provider
    uses one it finds, or creates a docker-container builder (which pulls BuildKit's image)."""
    base_image: str | None = None
    """The Dockerfile's BASE_IMAGE (default python:3.11-slim-bookworm), e.g. a mirror for air-gapped builds."""
    wheelhouse: str | None = None
    """A directory of wheels for the image's lock: the build then installs with --no-index."""
    platform: str = "linux/amd64"

    def __post_init__(self) -> None:
        if not Path(self.project_dir).is_dir():
            raise ValueError(f"ServingImageArgs.project_dir {self.project_dir!r} is not a directory")
        if self.wheelhouse is not None and not Path(self.wheelhouse).is_dir():
            raise ValueError(f"ServingImageArgs.wheelhouse {self.wheelhouse!r} is not a directory")
        if self.platform not in ("linux/amd64", "linux/arm64"):
            raise ValueError(f"ServingImageArgs.platform must be linux/amd64 or linux/arm64, got {self.platform!r}")

    @property
    def variant(self) -> str:
        return "gpu" if self.gpu else "cpu"


def prepare_context(args: ServingImageArgs, digest: str) -> str:
    """Fetch the artifact (verified) and lay out the build context; reused while the model digest and
    the server's files (code, Dockerfile, locks, wheelhouse) are the same."""
    root = Path(args.project_dir)
    context = root / CONTEXTS_DIR / f"{digest[:16]}-{args.variant}-{source_key(args.wheelhouse)}"
    if (context / MARKER).is_file() and (context / "model" / "report.json").is_file():
        return str(context)
    model_dir = root / MODELS_DIR / digest
    if not (model_dir / "model.onnx").is_file():
        store = open_store(args.store_uri, root, args.store_region, args.store_endpoint)
        staging = model_dir.with_name(f".{digest}.fetching")
        if staging.exists():
            shutil.rmtree(staging)
        store.fetch(digest, staging)
        staging.rename(model_dir)
    return str(assemble(model_dir, context, wheelhouse=args.wheelhouse))


def context_digest(context: str | Path) -> str:
    """sha256 over the build context's files (paths and bytes): changes with the server code too.

    Every preview and `up` pass asks for it, and the context holds the wheelhouse (tens of MB): the digest
    is kept beside the context (DIR.digest) with the files' paths, sizes and mtimes it was taken from, and
    reading those again (a stat per file) is enough while none of them changed."""
    root = Path(context)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    listing = hashlib.sha256()
    for path in files:
        stat = path.stat()
        listing.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    cache = root.with_name(root.name + ".digest")
    try:
        cached = json.loads(cache.read_text())
        if cached.get("files") == listing.hexdigest():
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # none yet, or unreadable: hash the files
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest = h.hexdigest()
    partial = cache.with_name(f"{cache.name}.{os.getpid()}")  # another stack's preview may write it too
    try:
        partial.write_text(json.dumps({"files": listing.hexdigest(), "sha256": digest}) + "\n")
        os.replace(partial, cache)
    except OSError:
        pass  # a read-only checkout: hashed again next time
    return digest


def image_tag(repository: str, model_digest: str, context: str | Path, variant: str) -> str:
    """repo:<model digest>-<context digest>[-gpu]: unique per content, so immutable registries accept it."""
    suffix = "-gpu" if variant == "gpu" else ""
    return f"{repository}:{model_digest[:12]}-{context_digest(context)[:8]}{suffix}"


class ServingImage(pulumi.ComponentResource):
    ref: pulumi.Output[str]
    context_dir: pulumi.Output[str]

    def __init__(self, name: str, args: ServingImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelstack:index:ServingImage", name, None, opts)
        digest = pulumi.Output.from_input(args.model_digest)
        context_dir = digest.apply(lambda d: prepare_context(args, d))
        tag = pulumi.Output.all(args.repository, digest, context_dir).apply(
            lambda v: image_tag(v[0], v[1], v[2], args.variant))
        cache_ref = pulumi.Output.from_input(args.cache_repository or args.repository).apply(
            lambda r: f"{r}:buildcache-{args.variant}")

        registries = None
        if args.login is not None:
            registries = [docker_build.RegistryArgs(address=args.login.address, username=args.login.username,
                                                    password=args.login.password)]
        cache_from = cache_to = None
        if args.registry_cache:
            cache_from = [docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache_ref))]
            cache_to = [docker_build.CacheToArgs(registry=docker_build.CacheToRegistryArgs(
                ref=cache_ref, mode=docker_build.CacheMode.MAX, image_manifest=True, oci_media_types=True))]

        # Relative to the project (the provider runs there): where a checkout lives is not what the image
        # is, so another checkout of the same commit (a CI runner's) previews no change.
        location = context_dir.apply(lambda c: os.path.relpath(c, args.project_dir))
        image = docker_build.Image(
            f"{name}-image",
            tags=[tag],
            context=docker_build.BuildContextArgs(location=location),
            dockerfile=docker_build.DockerfileArgs(location=location.apply(lambda c: f"{c}/Dockerfile")),
            build_args={"VARIANT": args.variant, **({"BASE_IMAGE": args.base_image} if args.base_image else {})},
            platforms=[docker_build.Platform(args.platform)],
            push=True,
            registries=registries,
            cache_from=cache_from,
            cache_to=cache_to,
            builder=docker_build.BuilderConfigArgs(name=args.builder) if args.builder else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.ref = image.ref
        self.context_dir = context_dir
        self.register_outputs({"ref": self.ref, "context_dir": self.context_dir})
