#!/usr/bin/env bash
# A local Kubernetes cluster with one real node, for the `local` stack, `make up` and `make e2e`:
# etcd, kube-apiserver (Pod Security admission on, as by default), kube-controller-manager,
# kube-scheduler, Debian's docker-registry (seeded with a debootstrap base image through the Docker
# engine, started if none answers), buildkitd as the buildx builder `modelstack-local`, and the node:
# containerd + runc, the kubelet, kube-proxy, Debian's CNI plugins on the bridge modelstack0, CoreDNS, metrics-server,
# the Argo Rollouts controller (canary releases), KEDA (scaling on the servers' queue), and kube-router's
# network-policy controller (NetworkPolicies enforced).
# The daemons are declared in local-cluster/daemons.sh; the node's files are in local-cluster/node/.
#
#   local-cluster/cluster.sh up       build the tools if needed (tools/build.sh), start everything, wait until ready
#   local-cluster/cluster.sh down     stop every process it started (by pid), undo the node's changes to the
#                                     host (mounts, network, iptables, sysctls), remove its state
#   local-cluster/cluster.sh env      print the export lines a shell can eval: PATH, PULUMI_HOME, KUBECONFIG, ...
#   local-cluster/cluster.sh status   say what runs
#   local-cluster/cluster.sh restart DAEMON   stop one daemon (daemons.sh) and start it again, until ready
#
#   MODELSTACK_CLUSTER_DIR  state: certificates, kubeconfig, etcd data, node state, logs, pids (default .modelstack/local-cluster)
#   MODELSTACK_APISERVER_PORT (36443), MODELSTACK_ETCD_PORT (32379; the peer port is the next one),
#   MODELSTACK_REGISTRY_PORT (35000; Pulumi.local.yaml names it), MODELSTACK_KUBELET_PORT (10250; its healthz
#   port is 10248), MODELSTACK_KUBE_PROXY_PORT (10256; its metrics port is 10249), MODELSTACK_KUBE_ROUTER_PORT
#   (20244, its health port),
#   MODELSTACK_POD_SUBNET (10.244.0: pods get .2-.254 of it; the node, the API server and the bridge .1)
# Needs root or passwordless sudo: containerd, runc, the kubelet and kube-proxy mount file systems and
# make cgroups, network namespaces and iptables rules; buildkitd runs builds with runc.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here=$repo/local-cluster
state=${MODELSTACK_CLUSTER_DIR:-$repo/.modelstack/local-cluster}
apiserver_port=${MODELSTACK_APISERVER_PORT:-36443}
etcd_port=${MODELSTACK_ETCD_PORT:-32379}
registry_port=${MODELSTACK_REGISTRY_PORT:-35000}
kubelet_port=${MODELSTACK_KUBELET_PORT:-10250}
kubelet_healthz_port=$((kubelet_port - 2))
kube_proxy_healthz_port=${MODELSTACK_KUBE_PROXY_PORT:-10256}
kube_proxy_metrics_port=$((kube_proxy_healthz_port - 7))
kube_router_healthz_port=${MODELSTACK_KUBE_ROUTER_PORT:-20244}
pod_subnet=${MODELSTACK_POD_SUBNET:-10.244.0}
# shellcheck disable=SC2034  # pod_cidr, dns_ip and runc (below) are read through render_node_files' ${!name}
pod_cidr=$pod_subnet.0/24 node_ip=$pod_subnet.1
# shellcheck disable=SC2034
service_cidr=10.96.0.0/16 dns_ip=10.96.0.10
bridge=modelstack0 node_name=modelstack-node context=modelstack-local
registry=127.0.0.1:$registry_port
pause_image=$registry/modelstack-system/pause:3.10 coredns_image=$registry/modelstack-system/coredns:1.15.0
prometheus_image=$registry/modelstack-system/prometheus:3.16.0  # Pulumi.local.yaml names it
metrics_server_image=$registry/modelstack-system/metrics-server:0.8.0
argo_rollouts_image=$registry/modelstack-system/argo-rollouts:1.10.1
keda_image=$registry/modelstack-system/keda:2.21.0 keda_adapter_image=$registry/modelstack-system/keda-adapter:2.21.0
keda_webhooks_image=$registry/modelstack-system/keda-admission-webhooks:2.21.0
pki=$state/pki containerd_sock=$state/containerd/containerd.sock cni_bin_dir=/usr/lib/cni
# What the kubelet sets on the host (and bridged pod traffic needs); restored by `down`.
sysctls=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory kernel.panic kernel.panic_on_oops)
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo -n"

die() { echo "local-cluster: $*" >&2; exit 1; }
log() { echo "local-cluster: $*" >&2; }

# shellcheck source=local-cluster/daemons.sh
source "$here/daemons.sh"

running() { [[ -f $state/pids/$1.pid ]] && $sudo kill -0 "$(cat "$state/pids/$1.pid")" 2>/dev/null; }

# render_node_files: local-cluster/node/* into $state/node/ (their ${...} from this script), the registry's
# hosts.toml and the CNI network where containerd looks for them.
render_node_files() {
    local file vars name
    vars=(state pki node_ip node_name pod_cidr bridge dns_ip registry pause_image coredns_image metrics_server_image containerd_sock
        cni_bin_dir runc kubelet_port kubelet_healthz_port kube_proxy_healthz_port kube_proxy_metrics_port)
    mkdir -p "$state/node/certs.d/$registry" "$state/node/net.d"
    for file in "$here"/node/*; do
        # shellcheck disable=SC2016  # envsubst's list of ${name}s; the values come through its environment
        (for name in "${vars[@]}"; do export "${name}=${!name}"; done
         envsubst "$(printf '${%s} ' "${vars[@]}")" <"$file" >"$state/node/$(basename "$file")")
    done
    mv "$state/node/hosts.toml" "$state/node/certs.d/$registry/hosts.toml"
    mv "$state/node/10-modelstack.conflist" "$state/node/net.d/"
}

# fail_with_log NAME WHY: the last lines of NAME's log, then one line naming WHY and the log.
fail_with_log() {
    tail -n 20 "$state/logs/$1.log" >&2 || true
    die "$1 $2; its log: $state/logs/$1.log"
}

# wait_for NAME SECONDS CMD...: until CMD succeeds, while NAME's process lives.
wait_for() {
    local name=$1 seconds=$2 deadline; shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        running "$name" || fail_with_log "$name" "exited"
        ((SECONDS < deadline)) || fail_with_log "$name" "is not ready after ${seconds}s"
        sleep 0.5
    done
}

declaration() {
    ports=() root="" command=() ready=() ready_s=30
    "daemon_$1"
}

# start_daemon NAME: run its command in its own session (it outlives this script), then wait until ready.
start_daemon() {
    local name=$1 again=${2:-} as=""
    declaration "$name"
    [[ -n $root ]] && as=$sudo
    if declare -F "before_$name" >/dev/null; then "before_$name"; fi
    # shellcheck disable=SC2086  # $as is empty or "sudo -n"
    setsid nohup $as "${command[@]}" >>"$state/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$state/pids/$name.pid"
    wait_for "$name" "$ready_s" "${ready[@]}"
    if [[ -z $again ]] && declare -F "after_$name" >/dev/null; then "after_$name"; fi
}

# restart NAME: stop one daemon and start it again, waiting until it is ready (its after-start step, such
# as applying manifests, is not repeated): what a node's operator does, and the e2e's fault steps.
restart() {
    local name=${1:-}
    [[ " ${DAEMONS[*]} " == *" $name "* ]] || die "restart which daemon? one of: ${DAEMONS[*]}"
    complete || die "not up; run local-cluster/cluster.sh up"
    # shellcheck source=/dev/null  # the tools' PATH and the cluster's KUBECONFIG, written by up
    source "$state/env.sh"
    # shellcheck disable=SC2034  # containerd.toml's BinaryName, rendered at up
    runc=$(command -v runc)
    local start=$SECONDS
    stop_pid "$(cat "$state/pids/$name.pid")"
    start_daemon "$name" again
    log "$name restarted and ready in $((SECONDS - start)) s"
}

stop_pid() {
    local pid=$1
    $sudo kill -0 "$pid" 2>/dev/null || return 0
    $sudo kill -TERM "$pid"
    for _ in $(seq 100); do $sudo kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    $sudo kill -KILL "$pid" 2>/dev/null || true
}

# holder PORT: who listens on PORT, for the error message.
holder() {
    local line
    line=$($sudo ss -Hltnp "sport = :$1" 2>/dev/null | head -n 1)
    if [[ $line =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
        echo "${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]}$(cwd_of "${BASH_REMATCH[2]}"))"
    else
        echo "another process"
    fi
}
cwd_of() { local cwd; cwd=$($sudo readlink "/proc/$1/cwd" 2>/dev/null) && echo ", in $cwd"; }

preflight() {
    if [[ -n $sudo ]] && ! sudo -n true 2>/dev/null; then
        die "the node needs root: containerd, runc, the kubelet and kube-proxy mount file systems and make cgroups, network namespaces and iptables rules (buildkitd too); run \`local-cluster/cluster.sh up\` as root, or give $(id -un) passwordless sudo"
    fi
    local cmd name port
    for cmd in openssl docker-registry envsubst iptables ip ss "$cni_bin_dir/bridge"; do
        command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || die "$cmd is not installed; run scripts/install-system-deps.sh"
    done
    [[ $pod_subnet =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "MODELSTACK_POD_SUBNET must be three octets like 10.244.0, got '$pod_subnet'"
    for name in "${DAEMONS[@]}"; do
        declaration "$name"
        for port in "${ports[@]}"; do
            if $sudo ss -Hltn "sport = :$port" | grep -q .; then
                die "port $port, which $name needs, is taken by $(holder "$port"); stop it, or move $name with the MODELSTACK_*_PORT variables (local-cluster/cluster.sh's header)"
            fi
        done
    done
    stale_bridge=false
    if ip link show "$bridge" >/dev/null 2>&1; then
        if pgrep -f -- "kubelet --config .*/node/kubelet.yaml" >/dev/null; then
            die "the network bridge $bridge exists and a kubelet runs: another checkout's local cluster runs here; stop it with its \`local-cluster/cluster.sh down\`"
        fi
        stale_bridge=true  # a cluster whose processes were killed (a machine's session ended): cleaned in up
    fi
}

certificates() {
    local pki=$state/pki
    mkdir -p "$pki"
    (
        cd "$pki"
        # The cluster's CA, and the front proxy's: the API server proves with a certificate of the latter
        # which user it forwards to an aggregated API (metrics-server).
        for ca in ca front-proxy-ca; do
            openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=modelstack-local-$ca" \
                -keyout "$ca.key" -out "$ca.crt" 2>/dev/null
        done
        # cert NAME SUBJECT SANS [CA]: a certificate from CA (default: the cluster's) for server and client auth.
        cert() {
            local ca=${4:-ca}
            printf '%s\n' "[v3]" "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
                "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=$3" >"$1.ext"
            openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
            openssl x509 -req -in "$1.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 30 \
                -extfile "$1.ext" -extensions v3 -out "$1.crt" 2>/dev/null
        }
        cert front-proxy-client "/CN=front-proxy-client" "DNS:front-proxy-client" front-proxy-ca
        # The API server's certificate also identifies the admin and the control plane's clients.
        cert admin "/O=system:masters/CN=modelstack-admin" \
            "IP:$node_ip,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        # The kubelet serves with it and signs in with it: the Node authorizer knows it by this name.
        cert node "/O=system:nodes/CN=system:node:$node_name" "IP:$node_ip,DNS:$node_name"
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        chmod 600 ./*.key
    )
    kubeconfig admin >"$state/kubeconfig"
    kubeconfig node >"$state/node.kubeconfig"
    chmod 600 "$state/kubeconfig" "$state/node.kubeconfig"
}

kubeconfig() {
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $context
  cluster:
    server: https://$node_ip:$apiserver_port
    certificate-authority: $state/pki/ca.crt
users:
- name: $context-$1
  user:
    client-certificate: $state/pki/$1.crt
    client-key: $state/pki/$1.key
contexts:
- name: $context
  context: {cluster: $context, user: $context-$1}
current-context: $context
EOF
}

# The node's bridge with the address the API server, the kubelet and kube-proxy bind to, before any pod
# exists (the CNI bridge plugin then finds it as it wants it); and the sysctls, saved for `down`.
host_network() {
    local key
    for key in "${sysctls[@]}"; do echo "$key=$(sysctl -n "$key")"; done >"$state/sysctls.saved"
    $sudo sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
    $sudo ip link add "$bridge" type bridge
    $sudo ip addr add "$node_ip/24" dev "$bridge"
    $sudo ip link set "$bridge" up
    # Docker sets the FORWARD policy to DROP; the CNI firewall plugin accepts each pod's own traffic,
    # this accepts what kube-proxy forwards between pods of the bridge.
    $sudo iptables -w -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT -m comment --comment modelstack-local
}

# system_image NAME REF BINARY FROM USER [DIR]: an image of one binary (in DIR, /usr/local/bin unless the
# manifest that runs it names another path, so the rest of the file system is free for volumes), built by
# BuildKit and pushed to the registry.
system_image() {
    local dir=$state/images/$1 bin=${6:-/usr/local/bin}/$1
    mkdir -p "$dir"
    cp "$3" "$dir/$1"
    printf '%s\n' "FROM $4" "COPY $1 $bin" "USER $5" "ENTRYPOINT [\"$bin\"]" >"$dir/Dockerfile"
    DOCKER_CONFIG=$state/docker buildx build --builder modelstack-local --quiet --push -t "$2" "$dir" >/dev/null
}

# What no upstream registry can give here, pushed to the local one: the node's sandbox (pause), CoreDNS,
# and Prometheus for the local stack's monitoring, each a static binary tools/build.sh builds from source.
system_images() {
    system_image pause "$pause_image" "$(command -v pause)" scratch 65535:65535
    system_image coredns "$coredns_image" "$(command -v coredns)" scratch 65532:65532
    system_image prometheus "$prometheus_image" "$(command -v prometheus)" scratch 65534:65534
    system_image metrics-server "$metrics_server_image" "$(command -v metrics-server)" scratch 65534:65534
    system_image rollouts-controller "$argo_rollouts_image" "$(command -v rollouts-controller)" scratch 999:999
    # KEDA's manifest runs /keda, /keda-adapter and /keda-admission-webhooks, as its own images have them.
    system_image keda "$keda_image" "$(command -v keda)" scratch 65532:65532 /
    system_image keda-adapter "$keda_adapter_image" "$(command -v keda-adapter)" scratch 65532:65532 /
    system_image keda-admission-webhooks "$keda_webhooks_image" "$(command -v keda-admission-webhooks)" scratch \
        65532:65532 /
}

write_env() {
    {
        echo "$tools_env"
        # The language host tools/build.sh makes runs the python3 on PATH: the project's venv.
        echo "export PATH=\"$repo/.venv/bin:\$PATH\""
        echo "export KUBECONFIG=\"$state/kubeconfig\""
        echo "export MODELSTACK_REGISTRY=\"$registry\""
        # docker-build finds the modelstack-local builder in buildx's store under DOCKER_CONFIG.
        echo "export DOCKER_CONFIG=\"$state/docker\""
        # Nothing is downloaded: plugins come from tools/build.sh, the CLI never checks for updates.
        echo "export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"
        echo "export PULUMI_IGNORE_AMBIENT_PLUGINS=true"
    } >"$state/env.sh.tmp"
    mv "$state/env.sh.tmp" "$state/env.sh"
}

complete() {
    local name
    [[ -f $state/env.sh ]] || return 1
    for name in "${DAEMONS[@]}"; do running "$name" || return 1; done
}

up() {
    if complete; then log "already up ($state)"; return 0; fi
    if [[ -d $state/pids ]]; then
        log "an earlier up did not finish, or a daemon stopped; stopping what is left, then starting again"
        down
    fi
    preflight
    tools_env=$("$repo/tools/build.sh")
    eval "$tools_env"
    if $stale_bridge; then
        log "a local cluster that was never stopped left the bridge $bridge and its iptables rules; removing them"
        node_host_cleanup
    fi
    # shellcheck disable=SC2034  # containerd.toml's BinaryName
    runc=$(command -v runc)
    "$repo/scripts/start-dockerd.sh" >/dev/null

    rm -rf "$state" && mkdir -p "$state"/{logs,pids,registry,containerd} && mkdir -m 700 "$state/etcd"
    certificates
    export KUBECONFIG=$state/kubeconfig
    render_node_files
    host_network

    local name
    for name in "${DAEMONS[@]}"; do start_daemon "$name"; done
    write_env
    log "up: node $node_name ready, kubectl context $context, registry $registry; eval \"\$(local-cluster/cluster.sh env)\""
}

# Pods first, through the API while it still runs (the kubelet tears down their containers and networks
# as Kubernetes does); then every daemon in reverse order; then what the node left on the host.
down() {
    local i name
    if running kube-apiserver && running kubelet; then
        KUBECONFIG=$state/kubeconfig kubectl drain "$node_name" --force --ignore-daemonsets --delete-emptydir-data \
            --disable-eviction --grace-period=1 --timeout=60s >/dev/null 2>&1 || true
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        [[ -f $state/pids/$name.pid ]] || continue
        [[ $name == containerd ]] && leftover_containers
        stop_pid "$(cat "$state/pids/$name.pid")"
        rm -f "$state/pids/$name.pid"
    done
    node_host_cleanup
    $sudo rm -rf --one-file-system "$state"
    log "down"
}

# Containers the drain did not remove (the API server or kubelet was gone): killed through containerd.
leftover_containers() {
    local ctr=(ctr --address "$containerd_sock" -n k8s.io) id
    command -v ctr >/dev/null && running containerd || return 0
    for id in $($sudo "${ctr[@]}" tasks ls -q 2>/dev/null); do $sudo "${ctr[@]}" tasks kill -s KILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $($sudo "${ctr[@]}" tasks ls -q 2>/dev/null); do $sudo "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
}

# What the node leaves on the host: mounts under the state directory (volumes, container roots, pod
# network namespaces), kube-proxy's and the CNI plugins' iptables chains, the bridge, the sysctls.
node_host_cleanup() {
    local mnt line
    while read -r mnt; do $sudo umount -l "$mnt" 2>/dev/null || true; done < <(
        awk -v s="$state/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r)
    if command -v kube-proxy >/dev/null || [[ -f $state/env.sh ]]; then
        [[ -f $state/env.sh ]] && eval "$(grep '^export PATH=' "$state/env.sh" | head -n 1)"
        command -v kube-proxy >/dev/null && $sudo kube-proxy --cleanup >/dev/null 2>&1 || true
    fi
    cni_chains_cleanup
    shared_chains_cleanup
    network_policy_cleanup
    while $sudo iptables -w -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT -m comment --comment modelstack-local 2>/dev/null; do :; done
    ip link show "$bridge" >/dev/null 2>&1 && $sudo ip link delete "$bridge"
    if [[ -f $state/sysctls.saved ]]; then
        while read -r line; do $sudo sysctl -q -w "$line" || true; done <"$state/sysctls.saved"
    fi
}

# The bridge plugin's per-pod masquerade chains (CNI-<hash>, commented with the network's name) and the
# firewall plugin's chains, for pods whose teardown never ran.
cni_chains_cleanup() {
    local rule chain
    while read -r rule; do
        eval "$sudo iptables -w -t nat ${rule/-A/-D}" 2>/dev/null || true  # a rule as iptables -S quotes it
    done < <($sudo iptables -w -t nat -S POSTROUTING 2>/dev/null | grep -- '-j CNI-' | grep 'name: \\"modelstack\\"' || true)
    for chain in $($sudo iptables -w -t nat -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-/ {print $2}'); do
        $sudo iptables -w -t nat -S "$chain" 2>/dev/null | grep -q 'name: \\"modelstack\\"' || continue
        $sudo iptables -w -t nat -F "$chain" && $sudo iptables -w -t nat -X "$chain" 2>/dev/null || true
    done
}

# Chains the kubelet (KUBE-FIREWALL, its canary and hint) and the CNI firewall plugin (CNI-FORWARD, CNI-ADMIN)
# make once per host and never remove: the jumps to them, then the chains.
shared_chains_cleanup() {
    local table rule chain
    for table in filter nat mangle; do
        while read -r rule; do
            eval "$sudo iptables -w -t $table ${rule/-A/-D}" 2>/dev/null || true  # a rule as iptables -S quotes it
        done < <($sudo iptables -w -t "$table" -S 2>/dev/null |
            grep -E -- '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-FIREWALL|CNI-FORWARD)$' || true)
        for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT CNI-FORWARD CNI-ADMIN; do
            if $sudo iptables -w -t "$table" -F "$chain" 2>/dev/null; then $sudo iptables -w -t "$table" -X "$chain"; fi
        done
    done
}

# kube-router's filter chains and ipsets (its own --cleanup-config leaves the chains and then panics on
# IPVS, which it never used here): the jumps to them first, then every chain, then the sets they matched.
network_policy_cleanup() {
    local rule chain set
    while read -r rule; do
        eval "$sudo iptables -w ${rule/-A/-D}" 2>/dev/null || true
    done < <($sudo iptables -w -S 2>/dev/null | grep -E -- '^-A (INPUT|OUTPUT|FORWARD) .*-j KUBE-ROUTER-' || true)
    local chains=()
    mapfile -t chains < <($sudo iptables -w -S 2>/dev/null |
        awk '$1 == "-N" && $2 ~ /^KUBE-(ROUTER|POD-FW|NWPLCY|SRC|DST)-/ {print $2}')
    for chain in "${chains[@]}"; do $sudo iptables -w -F "$chain" 2>/dev/null || true; done
    for chain in "${chains[@]}"; do $sudo iptables -w -X "$chain" 2>/dev/null || true; done
    command -v ipset >/dev/null || return 0
    for set in $($sudo ipset list -n 2>/dev/null | grep -E '^(KUBE-(SRC|DST)-|kube-router-)' || true); do
        $sudo ipset destroy "$set" 2>/dev/null || true
    done
}

status() {
    local name rc=0
    for name in "${DAEMONS[@]}"; do
        if running "$name"; then echo "$name: running (pid $(cat "$state/pids/$name.pid"))"
        else echo "$name: stopped"; rc=1; fi
    done
    return $rc
}

case ${1:-} in
    up) up ;;
    down) down ;;
    env) [[ -f $state/env.sh ]] || die "not up; run local-cluster/cluster.sh up"; cat "$state/env.sh" ;;
    status) status ;;
    restart) restart "${2:-}" ;;
    *) die "usage: local-cluster/cluster.sh up|down|env|status|restart DAEMON" ;;
esac
