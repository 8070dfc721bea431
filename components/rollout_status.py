"""RolloutStatus: `pulumi up` follows an Argo Rollout until its canary is promoted or rolled back.

The kubernetes provider applies a Rollout and returns at once (it has no notion of a canary's outcome).
This dynamic resource changes whenever the Rollout's revision does, and its update waits (live/rollout.py,
through kubectl and the stack's kube context): a promoted canary is a successful update; a canary its
analysis aborted fails the update with one line naming the metric, its value and the threshold, while
the stable pods keep serving. Bounded by `serving.rollout.timeoutS`, never a hang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, UpdateResult

from .dynamic_provider import ProjectWorkerProvider, ship_by_value

WATCHED = ("namespace", "name", "revision")


class RolloutStatusProvider(ProjectWorkerProvider):
    @staticmethod
    def _wait(props: dict[str, Any]) -> dict[str, Any]:
        worker = ProjectWorkerProvider.import_worker(props, "live.rollout")
        outs = worker.wait_for_rollout(props["namespace"], props["name"], context=props.get("kubeContext"),
                                       timeout_s=float(props["timeoutS"]))
        return {**props, **outs}

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in WATCHED if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['namespace']}/{props['name']}", outs=self._wait(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._wait(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to remove: the Rollout is the kubernetes provider's."""


ship_by_value(RolloutStatusProvider)


@dataclass(frozen=True)
class RolloutStatusArgs:
    namespace: str
    name: str
    revision: pulumi.Input[str]
    """Changes with the Rollout's pod template (image digest and settings): then the update waits."""
    timeout_s: int
    kube_context: str | None
    project_dir: str


class RolloutStatus(pulumi.dynamic.Resource):
    stableHash: pulumi.Output[str]  # the pod template hash serving once the rollout settled
    stableImage: pulumi.Output[str]

    def __init__(self, name: str, args: RolloutStatusArgs, opts: pulumi.ResourceOptions | None = None):
        props = {
            "namespace": args.namespace, "name": args.name, "revision": args.revision, "timeoutS": args.timeout_s,
            "kubeContext": args.kube_context, "projectDir": args.project_dir, "stableHash": None, "stableImage": None,
        }
        super().__init__(RolloutStatusProvider(), name, props, opts)
