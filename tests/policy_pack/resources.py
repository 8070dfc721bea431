"""Realistic resource props as Pulumi hands them to the policy pack: camelCase, numbers as floats.

Each builder returns a fresh object that passes every rule; a test breaks one thing in it.
"""

from __future__ import annotations

from typing import Any

from policy.rules.props import UNKNOWN_STRING

DIGEST = "sha256:" + "5f" * 32
IMAGE = f"localhost:5000/modelstack/digits:0123456789ab@{DIGEST}"
UNKNOWN = UNKNOWN_STRING  # what the engine sends for a value not known at preview
# A recipe's gate as optimize/recipe.py GateSpec dumps it (the defaults).
GATE = {"task": "auto", "max_accuracy_drop": 0.01, "min_agreement": 0.99, "min_cosine": 0.99,
        "min_cosine_worst": 0.95, "max_relative_error": 0.05}
STRICT_GATE = {**GATE, "max_accuracy_drop": 0.0, "min_agreement": 0.999}


def labels(component: str = "inference", name: str = "digits") -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "modelstack-dev",
            "app.kubernetes.io/component": component, "app.kubernetes.io/version": "0123456789ab",
            "app.kubernetes.io/part-of": "modelstack", "app.kubernetes.io/managed-by": "pulumi"}


def container(name: str = "server", image: str = IMAGE) -> dict[str, Any]:
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080.0, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": "digits"}}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 10001.0, "runAsGroup": 10001.0, "allowPrivilegeEscalation": False,
            "privileged": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def pod_spec() -> dict[str, Any]:
    return {
        "serviceAccountName": "digits", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001.0, "fsGroup": 10001.0,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container()],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }


def deployment(replicas: float | None = 2.0, component: str = "inference") -> dict[str, Any]:
    meta = {"name": "digits", "namespace": "modelstack-dev", "labels": labels(component)}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "digits"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0.0, "maxSurge": 1.0}},
        "template": {"metadata": {"labels": labels(component)}, "spec": pod_spec()},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def first_container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


def config_map() -> dict[str, Any]:
    return {"metadata": {"name": "digits", "namespace": "modelstack-dev", "labels": labels()},
            "data": {"MODELSTACK_SERVING_MODEL_NAME": "digits", "MODELSTACK_SERVING_PORT": "8080",
                     "MODELSTACK_SERVING_MAX_BATCH_SIZE": "8"}}


def hpa(min_replicas: float | None = 3.0, max_replicas: float = 10.0) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits"},
        "maxReplicas": max_replicas,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70.0}}}],
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    return {"metadata": {"name": "digits", "namespace": "modelstack-prod", "labels": labels()}, "spec": spec}


def optimized_model(agreement: Any = 0.998, accuracy_delta: Any = -0.002, **figures: Any) -> dict[str, Any]:
    """OptimizedModel's outputs after `up` (artifacts/build.py: the inputs plus the measured figures);
    `figures` overrides the others by output name (task, cosineMean, cosineMin, relativeError, ...)."""
    return {
        "modelName": "digits", "sourcePath": "examples/digits/build/model.pt", "sourceSha256": "ab" * 32,
        "recipe": {"name": "int8-dynamic", "quantize": {"mode": "dynamic_int8"}, "gate": dict(GATE)},
        "storeUri": "file://.modelstack/artifacts", "digest": "cd" * 32, "cacheHit": False,
        "sizeRatio": 0.27, "accuracyDelta": accuracy_delta, "agreement": agreement, "task": "classification",
        "cosineMean": 0.9999, "cosineMin": 0.998, "relativeError": 0.01,
        "latencyP50Ms": 0.8, "latencyP99Ms": 1.6, "baselineLatencyP50Ms": 3.1, "lastChange": None, **figures,
    }


def promoted_model(agreement: Any = 0.9995, accuracy_delta: Any = 0.0,
                   gate: dict[str, Any] | None = None, **figures: Any) -> dict[str, Any]:
    """PromotedModel's inputs (components/promotion.py): the target stack's gate, the source's figures
    (components/release.py: with its task); `figures` overrides them by output name."""
    return {
        "modelName": "digits", "digest": "cd" * 32, "sourceArtifactUri": "s3://acme-ml/modelstack/" + "cd" * 32,
        "promotedFrom": "organization/modelstack/dev", "storeUri": "s3://acme-ml/modelstack",
        "storeRegion": "us-west-2", "storeEndpoint": None, "projectDir": ".",
        "gate": gate or {**STRICT_GATE},
        "figures": {"sizeRatio": 0.27, "agreement": agreement, "accuracyDelta": accuracy_delta,
                    "latencyP50Ms": 0.8, "latencyP99Ms": 1.6, "task": "classification", "cosineMean": 0.9999,
                    "cosineMin": 0.998, "relativeError": 0.01, **figures},
        "artifactUri": None, "copied": None, "reportDigest": None,
    }


def legacy(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures as a stack built before builds were task-aware exports them: no task, no cosine, no
    relative error."""
    return {k: v for k, v in figures.items() if k not in ("task", "cosineMean", "cosineMin", "relativeError")}


def ecr_repository(name: str = "modelstack/text-classifier") -> dict[str, Any]:
    return {"name": name, "imageTagMutability": "IMMUTABLE", "imageScanningConfiguration": {"scanOnPush": True},
            "encryptionConfigurations": [{"encryptionType": "AES256"}]}


def rollout(replicas: float | None = 2.0) -> dict[str, Any]:
    """An Argo Rollout: a Deployment's selector and pod template, canary steps instead of a rolling update."""
    d = deployment(replicas)
    d["spec"]["strategy"] = {"canary": {"maxSurge": 1.0, "maxUnavailable": 0.0, "steps": [{"setWeight": 50.0}]}}
    return {**d, "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout"}
