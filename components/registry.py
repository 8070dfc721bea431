"""Registry: where the serving image is pushed and pulled from.

- local: a registry container on the docker network kind uses, plus the
  KEP-1755 `local-registry-hosting` ConfigMap that tells tools where it is
  (nodes reach it through the containerd mirror in deploy/kind-cluster.yaml);
- ecr: a repository with immutable tags, scan on push and a lifecycle policy;
- external: a URL plus credentials from secret config (none for a registry
  that takes anonymous pushes, such as the local cluster's).

Credentials are always secret outputs. Providers (docker, aws, kubernetes)
come from the caller's ResourceOptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pulumi

from .config import StackConfig
from .labels import common_labels

# The names kind's local-registry guide uses; deploy/kind-cluster.yaml mirrors to this container.
KIND_NETWORK = "kind"
LOCAL_CONTAINER = "kind-registry"
LOCAL_INTERNAL_PORT = 5000
# registry:2 by digest (the container is pulled once per machine; a tag could change under us).
LOCAL_IMAGE = "registry:2@sha256:a3d8aaa63ed8681a604f1dea0aa03f100d5895b6a58ace528858a7b332415373"
SHARED_ANNOTATION = "modelstack.dev/shared"
KIND_REGISTRY_HELP = "https://kind.sigs.k8s.io/docs/user/local-registry/"


@dataclass(frozen=True)
class RegistryArgs:
    type: Literal["local", "ecr", "external"]
    repository: str
    """Repository path of the model's image, e.g. 'modelstack/digits'."""
    port: int = 5001
    keep_last_images: int = 30
    url: str | None = None
    username: str | None = None
    password: pulumi.Input[str] | None = None
    instance: str = "modelstack"
    manage: bool = True
    """local only: run the registry container (dev) or use the one already next to the cluster (test stacks)."""

    def __post_init__(self) -> None:
        if self.type not in ("local", "ecr", "external"):
            raise ValueError(f"RegistryArgs.type must be local, ecr or external, got {self.type!r}")
        if not self.repository or self.repository != self.repository.lower():
            raise ValueError(f"RegistryArgs.repository must be a lower-case repository path, got {self.repository!r}")
        if self.type == "external" and not self.url:
            raise ValueError("RegistryArgs: type 'external' needs a url")
        if self.type == "external" and self.username and self.password is None:
            raise ValueError("RegistryArgs: an external registry with a username needs its password")
        if not 1 <= self.keep_last_images <= 1000:
            raise ValueError(f"RegistryArgs.keep_last_images must be 1..1000, got {self.keep_last_images}")

    @classmethod
    def from_config(cls, cfg: StackConfig) -> RegistryArgs:
        r = cfg.registry
        return cls(
            type=r.type, repository=r.repository or f"{cfg.project}/{cfg.model_name}", port=r.port,
            keep_last_images=r.keep_last_images, url=r.url, username=r.username,
            password=cfg.secrets.get("registryPassword"), instance=cfg.namespace, manage=r.manage,
        )


class Registry(pulumi.ComponentResource):
    host: pulumi.Output[str]
    """Registry host[:port] as clients push to it and nodes pull from it."""
    repository_url: pulumi.Output[str]
    """host/repository of the model's image (no tag, no digest)."""
    cache_repository_url: pulumi.Output[str]
    """Where BuildKit keeps its layer cache: a mutable repository (ECR's image repository is immutable)."""
    username: pulumi.Output[str]
    password: pulumi.Output[str]
    """Push credentials ("" where the registry has none); the password is always secret."""

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelstack:index:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        host: pulumi.Input[str]
        cache_repository_url: pulumi.Output[str] | None = None
        if args.type == "local":
            host, user, password = self._local(name, args, child)
            repository_url = pulumi.Output.from_input(f"{host}/{args.repository}")
        elif args.type == "ecr":
            repository_url, host, user, password = self._ecr(name, args, child)
            cache_repository_url = self._ecr_cache(name, args, child)
        else:
            assert args.url
            base = args.url.removeprefix("https://").removeprefix("http://").rstrip("/")  # host[/path]
            host = base.split("/", 1)[0]
            repository_url = pulumi.Output.from_input(f"{base}/{args.repository}")
            user = pulumi.Output.from_input(args.username or "")
            password = pulumi.Output.from_input(args.password or "")
        self.host = pulumi.Output.from_input(host)
        # The host when config fixes it (local, external); an ECR registry's is known only after it exists.
        self.known_host: str | None = host if isinstance(host, str) else None
        self.repository_url = repository_url
        self.cache_repository_url = cache_repository_url or repository_url
        self.username = user
        self.password = pulumi.Output.secret(password)
        self.register_outputs({"host": self.host, "repository_url": self.repository_url,
                               "cache_repository_url": self.cache_repository_url,
                               "username": self.username, "password": self.password})

    def _local(self, name: str, args: RegistryArgs, child: pulumi.ResourceOptions
               ) -> tuple[str, pulumi.Output[str], pulumi.Output[str]]:
        import pulumi_docker as docker
        import pulumi_kubernetes as k8s

        host = f"localhost:{args.port}"
        if not args.manage:
            # The registry is one per cluster: a short-lived stack pushes to the one dev runs (content-
            # addressed tags never collide) and must not try to start a second container of that name.
            return host, pulumi.Output.from_input(""), pulumi.Output.from_input("")
        image = docker.RemoteImage(f"{name}-image", name=LOCAL_IMAGE, keep_locally=True, opts=child)
        docker.Container(
            f"{name}-container",
            name=LOCAL_CONTAINER,
            image=image.image_id,
            restart="always",
            # Loopback only: the registry has no authentication.
            ports=[docker.ContainerPortArgs(internal=LOCAL_INTERNAL_PORT, external=args.port, ip="127.0.0.1")],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=KIND_NETWORK)],
            opts=child,
        )
        # KEP-1755: how tools discover the registry of a local cluster.
        hosting = {
            "host": host,
            "hostFromContainerRuntime": f"{LOCAL_CONTAINER}:{LOCAL_INTERNAL_PORT}",
            "hostFromClusterNetwork": f"{LOCAL_CONTAINER}:{LOCAL_INTERNAL_PORT}",
            "help": KIND_REGISTRY_HELP,
        }
        k8s.core.v1.ConfigMap(
            f"{name}-hosting",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="local-registry-hosting", namespace="kube-public",
                # One per cluster, identical from every stack on it: server-side apply shares it, and a
                # short-lived stack's destroy must not take it from the others.
                labels=common_labels("registry", "kind", "registry", "2"),
                annotations={SHARED_ANNOTATION: "cluster"},
            ),
            data={"localRegistryHosting.v1": json.dumps(hosting, indent=2)},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True)),
        )
        # The local registry has no credentials; the empty strings keep the outputs' shape.
        return host, pulumi.Output.from_input(""), pulumi.Output.from_input("")

    def _ecr(self, name: str, args: RegistryArgs, child: pulumi.ResourceOptions
             ) -> tuple[pulumi.Output[str], pulumi.Output[str], pulumi.Output[str], pulumi.Output[str]]:
        import pulumi_aws as aws

        repo = aws.ecr.Repository(
            f"{name}-repository",
            name=args.repository,
            # Tags carry the model digest: a tag must never point at other content.
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=repo.name,
            policy=json.dumps({"rules": [{
                "rulePriority": 1,
                "description": f"keep the last {args.keep_last_images} images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                              "countNumber": args.keep_last_images},
                "action": {"type": "expire"},
            }]}),
            opts=child,
        )
        token = aws.ecr.get_authorization_token_output(
            registry_id=repo.registry_id, opts=pulumi.InvokeOutputOptions(parent=self))
        host = repo.repository_url.apply(lambda url: (url or "").split("/", 1)[0])
        return repo.repository_url, host, token.user_name, pulumi.Output.secret(token.password)

    def _ecr_cache(self, name: str, args: RegistryArgs, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """BuildKit rewrites its cache tag on every build, which an immutable repository refuses."""
        import pulumi_aws as aws

        cache = aws.ecr.Repository(
            f"{name}-cache-repository",
            name=f"{args.repository}-buildcache",
            image_tag_mutability="MUTABLE",
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            force_delete=True,  # only a cache: destroying the stack may drop it
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-cache-lifecycle",
            repository=cache.name,
            policy=json.dumps({"rules": [{
                "rulePriority": 1, "description": "drop cache layers unused for 14 days",
                "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days",
                              "countNumber": 14},
                "action": {"type": "expire"},
            }]}),
            opts=child,
        )
        return cache.repository_url

    def image_ref(self, digest: pulumi.Input[str]) -> pulumi.Output[str]:
        """repository@sha256:... — what a Deployment pins."""
        return pulumi.Output.concat(self.repository_url, "@", digest)
