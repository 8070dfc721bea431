"""Promotion: deploy the model and image another stack built and tested, by digest, building nothing.

`Promotion` reads the source stack through a `pulumi.StackReference` (so the dependency is in the state
and `pulumi stack graph`), keeps the tested artifact in this stack's store (`PromotedModel`: verified by
sha256, copied only where the stores differ) and the tested image in this stack's registry (the same
reference when the registries are the same, else `ImageCopy` by digest). The source's outputs were read
and checked at config time (components/release.py), before anything was registered.

The policy pack (policy/) judges `PromotedModel`'s figures against this stack's own gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, UpdateResult

from .dynamic_provider import ProjectWorkerProvider, ship_by_value
from .release import SourceRelease


class PromotedModelProvider(ProjectWorkerProvider):
    @staticmethod
    def _worker(props: dict[str, Any]) -> Any:
        return ProjectWorkerProvider.import_worker(props, "artifacts.promote")

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("digest", "storeUri", "storeRegion", "storeEndpoint", "gate")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._worker(props).promote_artifact(props)
        return CreateResult(id_=f"{props['modelName']}-{props['digest'][:16]}", outs=outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._worker(news).promote_artifact(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Forget this stack's reference; the content-addressed artifact may serve other stacks."""


class ImageCopyProvider(ProjectWorkerProvider):
    @staticmethod
    def _worker(props: dict[str, Any]) -> Any:
        return ProjectWorkerProvider.import_worker(props, "artifacts.promote")

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("sourceRepository", "digest", "repository", "tag") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._worker(props).copy_image(props)
        return CreateResult(id_=outs["ref"], outs=outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._worker(news).copy_image(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Registries with immutable tags keep the image; their lifecycle policy expires it."""


ship_by_value(PromotedModelProvider)
ship_by_value(ImageCopyProvider)


class PromotedModel(pulumi.dynamic.Resource):
    """The tested artifact, present and verified in this stack's store."""

    artifactUri: pulumi.Output[str]
    copied: pulumi.Output[bool]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(PromotedModelProvider(), name, {**props, "artifactUri": None, "copied": None,
                                                          "reportDigest": None}, opts)


class ImageCopy(pulumi.dynamic.Resource):
    """The tested image in this stack's registry, under the same digest."""

    ref: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(ImageCopyProvider(), name, {**props, "ref": None}, opts)


@dataclass(frozen=True)
class PromotionArgs:
    release: SourceRelease
    store_uri: str
    project_dir: str
    repository: pulumi.Input[str]  # this stack's image repository (REGISTRY/REPO)
    registry_host: str | None  # None when only known after `up` (ECR): the image is copied
    gate: dict[str, float]  # this stack's gate: the policy pack holds the figures to it
    store_region: str | None = None
    store_endpoint: str | None = None


class Promotion(pulumi.ComponentResource):
    image: pulumi.Output[str]
    artifact_uri: pulumi.Output[str]

    def __init__(self, name: str, args: PromotionArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelstack:index:Promotion", name, None, opts)
        release = args.release
        child = pulumi.ResourceOptions(parent=self)
        self.source = pulumi.StackReference(f"{name}-source", stack_name=release.stack, opts=child)
        model = PromotedModel(f"{name}-model", {
            "modelName": release.model_name, "digest": release.model_digest,
            "sourceArtifactUri": release.artifact_uri, "promotedFrom": release.stack,
            "storeUri": args.store_uri, "storeRegion": args.store_region, "storeEndpoint": args.store_endpoint,
            "projectDir": args.project_dir, "gate": args.gate, "figures": release.figures,
        }, opts=pulumi.ResourceOptions(parent=self, depends_on=[self.source]))

        if args.registry_host == release.registry_host:
            # The same registry: deploy the very reference that was tested.
            self.image = pulumi.Output.from_input(release.image)
        else:
            copy = ImageCopy(f"{name}-image", {
                "sourceRepository": release.image_repository, "digest": release.image_digest,
                "repository": args.repository, "tag": release.image_tag or release.model_digest[:12],
                "projectDir": args.project_dir,
            }, opts=child)
            self.image = copy.ref
        self.artifact_uri = model.artifactUri
        self.register_outputs({"image": self.image, "artifact_uri": self.artifact_uri})
