# The daemons of the local cluster, in start order (sourced by cluster.sh). One declaration each:
#
#   daemon_NAME() {
#       ports=(PORT...)          # TCP ports it listens on, checked free before anything starts
#       root=1                   # optional: started with sudo when not root
#       command=(ARGV...)        # what runs, in its own session; its log is logs/NAME.log, its pid pids/NAME.pid
#       ready=(ARGV...) ready_s=SECONDS   # polled until it succeeds; on timeout, the log's last lines
#   }
#   before_NAME() { ... }        # optional: files it needs, written just before it starts
#   after_NAME() { ... }         # optional: what to do once it is ready (apply manifests, push images)
#
# A declaration only sets variables (cluster.sh also reads them to check ports before anything starts).
# Adding a daemon is adding its declaration and its name to DAEMONS. The variables they read are set
# by cluster.sh (ports, addresses, $state, $pki); the node's files are local-cluster/node/*, rendered
# into $state/node/.
# shellcheck shell=bash disable=SC2034,SC2154,SC2054  # cluster.sh reads ports, root, command, ready, ready_s
# and sets what they read (registry, repo, sudo, ...); commas in arguments are flag values, not separators

DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler registry buildkitd containerd kubelet kube-proxy
    kube-router)

daemon_etcd() {
    ports=("$etcd_port" "$((etcd_port + 1))")
    command=(etcd --name local --data-dir "$state/etcd" --unsafe-no-fsync
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port"
        --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))"
        --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))"
        --initial-cluster "local=http://127.0.0.1:$((etcd_port + 1))")
    ready=(curl -sf "http://127.0.0.1:$etcd_port/health") ready_s=30
}

# On the node's bridge address (the host reaches it too): pods reach it through the kubernetes Service.
# --allow-privileged: privileged pods are then refused by Pod Security admission, not by this flag.
daemon_kube-apiserver() {
    ports=("$apiserver_port")
    command=(kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port"
        --bind-address "$node_ip" --advertise-address "$node_ip" --secure-port "$apiserver_port"
        --tls-cert-file "$pki/admin.crt" --tls-private-key-file "$pki/admin.key" --client-ca-file "$pki/ca.crt"
        --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key"
        --kubelet-preferred-address-types InternalIP
        --service-account-issuer https://kubernetes.default.svc.cluster.local
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key"
        --service-cluster-ip-range "$service_cidr" --authorization-mode Node,RBAC --allow-privileged=true
        --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client
        --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group
        --requestheader-extra-headers-prefix X-Remote-Extra- --enable-aggregator-routing=true
        --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key"
        --profiling=false)
    ready=(kubectl get --raw /readyz) ready_s=120
}

daemon_kube-controller-manager() {
    command=(kube-controller-manager --kubeconfig "$state/kubeconfig" --bind-address 127.0.0.1 --secure-port 0
        --leader-elect=false --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key"
        --use-service-account-credentials --profiling=false)
    # Pods wait for their service account, which the controller manager makes per namespace.
    ready=(kubectl get serviceaccount default -n default) ready_s=60
}

daemon_kube-scheduler() {
    command=(kube-scheduler --kubeconfig "$state/kubeconfig" --bind-address 127.0.0.1 --secure-port 0
        --leader-elect=false --profiling=false)
    ready=(true) ready_s=1
}

# Debian's docker-registry on loopback, no authentication: what the stack pushes to and the node pulls from.
daemon_registry() {
    ports=("$registry_port")
    command=(docker-registry serve "$state/registry.yaml")
    ready=(curl -sf "http://127.0.0.1:$registry_port/v2/") ready_s=30
}
before_registry() {
    cat >"$state/registry.yaml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $state/registry}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$registry_port}
EOF
}
after_registry() {
    # The serving image's base, made without pulling anything (debootstrap + docker import).
    local base=$registry/modelstack-base:bookworm-py311
    docker tag "$("$repo/scripts/base-image.sh")" "$base" && docker push -q "$base" >/dev/null
}

# BuildKit on the host (it runs builds with runc, as root), plain HTTP to the loopback registry;
# buildx's remote driver connects to it as the builder `modelstack-local`.
daemon_buildkitd() {
    root=1
    command=(env PATH="$PATH:/usr/sbin:/sbin" buildkitd --addr "unix://$state/buildkitd.sock"
        --root "$state/buildkit" --config "$state/buildkitd.toml")
    ready=(test -S "$state/buildkitd.sock") ready_s=30
}
before_buildkitd() {
    mkdir -p "$state/buildkit" "$state/docker"
    printf '%s\n' "[worker.oci]" "  enabled = true" "[worker.containerd]" "  enabled = false" \
        "[registry.\"$registry\"]" "  http = true" >"$state/buildkitd.toml"
}
after_buildkitd() {
    $sudo chown "$(id -u):$(id -g)" "$state/buildkitd.sock"
    DOCKER_CONFIG=$state/docker buildx create --name modelstack-local --driver remote \
        "unix://$state/buildkitd.sock" >/dev/null
    wait_for buildkitd 30 env DOCKER_CONFIG="$state/docker" buildx inspect --bootstrap modelstack-local
    system_images  # pause, CoreDNS: the node's containerd pulls them from the registry
}

# The node's container runtime, on a socket and root of its own (never Debian's docker/containerd).
daemon_containerd() {
    root=1
    command=(containerd --config "$state/node/containerd.toml")
    ready=(ctr --address "$containerd_sock" version) ready_s=30
}

# The real node: pods run here. Its certificate names it system:node:NAME (the Node authorizer).
daemon_kubelet() {
    root=1
    ports=("$kubelet_port" "$kubelet_healthz_port")
    command=(kubelet --config "$state/node/kubelet.yaml" --kubeconfig "$state/node.kubeconfig"
        --root-dir "$state/kubelet" --hostname-override "$node_name" --node-ip "$node_ip"
        --node-labels "modelstack.dev/node=real")
    ready=(kubectl wait --for=condition=Ready "node/$node_name" --timeout=1s) ready_s=120
}

# Services: ClusterIPs DNAT to the pods, from the host and from pods (iptables).
daemon_kube-proxy() {
    root=1
    ports=("$kube_proxy_healthz_port" "$kube_proxy_metrics_port")
    command=(kube-proxy --config "$state/node/kube-proxy.yaml")
    ready=(curl -sf "http://127.0.0.1:$kube_proxy_healthz_port/healthz") ready_s=60
}
# The add-ons, once Services route: CoreDNS, metrics-server (the HPA's CPU figures, as an aggregated API),
# Argo Rollouts as its release installs it (CRDs, RBAC, controller), and KEDA, with the images built here.
after_kube-proxy() {
    kubectl apply -f "$state/node/coredns.yaml" -f "$state/node/metrics-server.yaml" >/dev/null
    sed -e "s|quay.io/argoproj/argo-rollouts:latest|$argo_rollouts_image|" -e 's|imagePullPolicy: Always|imagePullPolicy: IfNotPresent|' \
        "$(dirname "$(command -v rollouts-controller)")/argo-rollouts-install.yaml" >"$state/node/argo-rollouts.yaml"
    kubectl create namespace argo-rollouts >/dev/null
    # Server-side: the CRDs are too large for the last-applied annotation of a client-side apply.
    kubectl apply --server-side -n argo-rollouts -f "$state/node/argo-rollouts.yaml" >/dev/null
    wait_for kube-proxy 120 kubectl -n kube-system rollout status deployment/coredns --timeout=1s
    wait_for kube-proxy 120 kubectl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=1s
    # KEDA as its module's kustomize tree renders it (tools/build.sh), with the images built here.
    sed -e "s|ghcr.io/kedacore/keda:main|$keda_image|" \
        -e "s|ghcr.io/kedacore/keda-metrics-apiserver:main|$keda_adapter_image|" \
        -e "s|ghcr.io/kedacore/keda-admission-webhooks:main|$keda_webhooks_image|" \
        -e 's|imagePullPolicy: Always|imagePullPolicy: IfNotPresent|' \
        "$(dirname "$(command -v keda)")/keda-install.yaml" >"$state/node/keda.yaml"
    kubectl apply --server-side -f "$state/node/keda.yaml" >/dev/null
    wait_for kube-proxy 120 kubectl -n argo-rollouts rollout status deployment/argo-rollouts --timeout=1s
    wait_for kube-proxy 180 kubectl -n keda rollout status deployment/keda-operator --timeout=1s
    wait_for kube-proxy 180 kubectl wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io \
        --timeout=1s
}

# NetworkPolicies enforced: kube-router's network-policy controller alone (iptables and ipsets on the node,
# matching bridged pod traffic through br_netfilter), beside the bridge CNI; no routing, no service proxy.
daemon_kube-router() {
    root=1
    ports=("$kube_router_healthz_port")
    command=(kube-router --kubeconfig "$state/kubeconfig" --hostname-override "$node_name"
        --run-firewall=true --run-router=false --run-service-proxy=false
        --service-cluster-ip-range "$service_cidr" --health-port "$kube_router_healthz_port")
    ready=(curl -sf "http://127.0.0.1:$kube_router_healthz_port/healthz") ready_s=60
}
