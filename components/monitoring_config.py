"""Files and values the Monitoring component deploys, as plain data (no Pulumi), so tests can check them with
promtool and real servers: the Prometheus config, Grafana provisioning, kube-prometheus-stack values.
"""

from __future__ import annotations

from typing import Any

from .alerts import DCGM_JOB, to_yaml

# Pinned images. Digests are the multi-arch index digests published for these tags.
PROMETHEUS_IMAGE = (
    "docker.io/prom/prometheus:v3.5.0@sha256:63805ebb8d2b3920190daf1cb14a60871b16fd38bed42b857a3182bc621f4996"
)
GRAFANA_TAG = "11.6.0"  # == dashboard.GRAFANA_VERSION (the SDK build the dashboard is made with)
GRAFANA_DIGEST = "62d2b9d20a19714ebfe48d1bb405086081bc602aa053e28cf6d73c7537640dfb"
GRAFANA_IMAGE = f"docker.io/grafana/grafana:{GRAFANA_TAG}@sha256:{GRAFANA_DIGEST}"
# The DCGM exporter NVIDIA's GPU Operator v25.3.1 deploys, pinned by the digest its published OLM bundle
# gives it (github.com/NVIDIA/gpu-operator, bundle/v25.3.1/manifests/gpu-operator-certified.
# clusterserviceversion.yaml: relatedImages `dcgm-exporter-image` and the operator's DCGM_EXPORTER_IMAGE).
DCGM_EXPORTER_IMAGE = (
    "nvcr.io/nvidia/k8s/dcgm-exporter@sha256:6c78381d83e2ccd84e9645d35d8768d98a52b73c75d1bb9395b5f030ce9bd3a4"
)
DCGM_PORT = 9400

PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
SCRAPE_INTERVAL = "15s"
CONFIG_DIR = "/etc/prometheus"
RULES_FILE = "rules.yaml"
DASHBOARDS_DIR = "/var/lib/grafana-dashboards"
DASHBOARD_FILE = "modelstack-serving.json"
KPS_RELEASE = "kps"
GRAFANA_SECRET_USER_KEY = "admin-user"
GRAFANA_SECRET_PASSWORD_KEY = "admin-password"


def _pod_job(job: str, namespace: str, app_name: str, scrape_interval: str) -> dict[str, Any]:
    """Pods in `namespace` labeled app.kubernetes.io/name=app_name that opt in with prometheus.io/* annotations."""
    return {
        "job_name": job,
        "scrape_interval": scrape_interval,
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [{
            "role": "pod",
            "namespaces": {"names": [namespace]},
            # Filtered by the API server, so Prometheus never lists (or holds) other pods.
            "selectors": [{"role": "pod", "label": f"app.kubernetes.io/name={app_name}"}],
        }],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "regex": app_name,
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "regex": "true",
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Pending|Succeeded|Failed",
             "action": "drop"},
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "regex": "(.+)",
             "target_label": "__metrics_path__"},
            {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
             "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2", "target_label": "__address__"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ],
    }


def prometheus_config(
    namespace: str, model: str, rules_path: str = f"{CONFIG_DIR}/{RULES_FILE}",
    dcgm_namespace: str | None = None, scrape_interval: str = SCRAPE_INTERVAL,
) -> dict[str, Any]:
    """prometheus.yml of the lightweight mode. The serving job is named after the model, as in prod."""
    jobs = [
        _pod_job(model, namespace, model, scrape_interval),
        {"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}]},
    ]
    if dcgm_namespace:
        jobs.append(_pod_job(DCGM_JOB, dcgm_namespace, DCGM_JOB, scrape_interval))
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": "30s",
                   "external_labels": {"monitor": f"modelstack-{namespace}"}},
        "rule_files": [rules_path],
        "scrape_configs": jobs,
    }


def grafana_datasources(prometheus_url: str) -> str:
    return to_yaml({"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "uid": "prometheus", "type": "prometheus", "access": "proxy",
        "url": prometheus_url, "isDefault": True, "editable": False,
        "jsonData": {"timeInterval": SCRAPE_INTERVAL},
    }]})


def grafana_dashboard_provider() -> str:
    return to_yaml({"apiVersion": 1, "providers": [{
        "name": "modelstack", "folder": "modelstack", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "options": {"path": DASHBOARDS_DIR},
    }]})


def kube_prometheus_stack_values(grafana_secret: str) -> dict[str, Any]:
    """Values for the chart: pick up every ServiceMonitor/PodMonitor/PrometheusRule and sidecar dashboard."""
    return {
        "fullnameOverride": KPS_RELEASE,
        "prometheus": {"prometheusSpec": {
            # Without these, only objects labeled with the chart's release are selected.
            "serviceMonitorSelectorNilUsesHelmValues": False,
            "podMonitorSelectorNilUsesHelmValues": False,
            "ruleSelectorNilUsesHelmValues": False,
            "retention": "15d",  # the slowest burn-rate window is 3d
        }},
        "grafana": {
            "fullnameOverride": f"{KPS_RELEASE}-grafana",
            "image": {"registry": "docker.io", "repository": "grafana/grafana", "tag": GRAFANA_TAG,
                      "sha": GRAFANA_DIGEST},
            "admin": {"existingSecret": grafana_secret, "userKey": GRAFANA_SECRET_USER_KEY,
                      "passwordKey": GRAFANA_SECRET_PASSWORD_KEY},
            "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1",
                                       "searchNamespace": "ALL"}},
            "grafana.ini": {"analytics": {"check_for_updates": False, "reporting_enabled": False}},
        },
    }
