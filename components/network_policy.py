"""NetworkPolicy pieces the components share: the peers and egress rules a pod of ours may need.

Egress is named as narrowly as NetworkPolicy can: the cluster DNS by its pods and named ports, the API
server by the addresses `modelstack:cluster.apiServer` gives (a NetworkPolicy cannot name it otherwise),
else by its usual ports alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi_kubernetes as k8s

# The cluster DNS (CoreDNS as kube-dns in kube-system, on EKS, kind and the embedded cluster alike), by its
# pods' named ports: the embedded cluster's CoreDNS listens on 1053 behind the Service's 53.
DNS_EGRESS = k8s.networking.v1.NetworkPolicyEgressRuleArgs(
    to=[k8s.networking.v1.NetworkPolicyPeerArgs(
        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": "kube-system"}),
        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"k8s-app": "kube-dns"}))],
    ports=[k8s.networking.v1.NetworkPolicyPortArgs(port="dns", protocol="UDP"),
           k8s.networking.v1.NetworkPolicyPortArgs(port="dns-tcp", protocol="TCP")],
)  # fmt: skip

# Where the API server usually listens behind the `kubernetes` Service (EKS 443, kind and kubeadm 6443).
API_SERVER_PORTS = (443, 6443)


def from_namespaces(names: Sequence[str]) -> list[k8s.networking.v1.NetworkPolicyPeerArgs]:
    # kubernetes.io/metadata.name is set on every namespace by the API server (>= 1.22).
    return [k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
        match_labels={"kubernetes.io/metadata.name": n})) for n in names]  # fmt: skip


def api_server_egress(endpoints: Sequence[str]) -> list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]:
    """To the API server: its endpoints ("IP:port", as `kubectl get endpointslice kubernetes` lists them),
    one rule per port; without them, its usual ports at any address. Policies see the endpoint, not the
    Service's 443, since kube-proxy translates the address first."""
    if not endpoints:
        return [k8s.networking.v1.NetworkPolicyEgressRuleArgs(
            ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in API_SERVER_PORTS])]
    by_port: dict[int, list[str]] = {}
    for endpoint in endpoints:
        host, port = endpoint.rsplit(":", 1)
        by_port.setdefault(int(port), []).append(host)
    return [k8s.networking.v1.NetworkPolicyEgressRuleArgs(
        to=[k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=f"{h}/32"))
            for h in hosts],
        ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=port, protocol="TCP")]) for port, hosts in by_port.items()]
