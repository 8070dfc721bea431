#!/usr/bin/env bash
# A local Kubernetes control plane and image registry on 127.0.0.1, for the `local` stack and `make e2e`:
#   etcd, kube-apiserver (Pod Security admission on, as by default), kube-controller-manager,
#   kube-scheduler, kwok (one fake node; pods are scheduled and marked ready, nothing runs),
#   Debian's docker-registry, seeded with a debootstrap base image (through the Docker engine,
#   started if none answers), and buildkitd as the buildx builder `modelstack-local`.
#
#   local-cluster/cluster.sh up       build the tools if needed (tools/build.sh), start everything, wait until ready
#   local-cluster/cluster.sh down     stop every process it started (by pid) and remove its state
#   local-cluster/cluster.sh env      print the export lines a shell can eval: PATH, PULUMI_HOME, KUBECONFIG, ...
#   local-cluster/cluster.sh status   say what runs
#
#   MODELSTACK_CLUSTER_DIR  state: certificates, kubeconfig, etcd data, logs, pids (default .modelstack/local-cluster)
#   MODELSTACK_APISERVER_PORT (36443), MODELSTACK_ETCD_PORT (32379; the peer port is the next one),
#   MODELSTACK_REGISTRY_PORT (35000): Pulumi.local.yaml names the registry port
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${MODELSTACK_CLUSTER_DIR:-$repo/.modelstack/local-cluster}
apiserver_port=${MODELSTACK_APISERVER_PORT:-36443}
etcd_port=${MODELSTACK_ETCD_PORT:-32379}
registry_port=${MODELSTACK_REGISTRY_PORT:-35000}
context=modelstack-local
processes=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok registry buildkitd)  # start order
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo -n"  # buildkitd runs builds with runc, as root

die() { echo "local-cluster: $*" >&2; exit 1; }
log() { echo "local-cluster: $*" >&2; }

running() { [[ -f $state/pids/$1.pid && -d /proc/$(cat "$state/pids/$1.pid") ]]; }

# start NAME CMD...: run CMD in its own session (it outlives this script), log to logs/NAME.log.
start() {
    local name=$1; shift
    setsid nohup "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$state/pids/$name.pid"
}

# wait_for WHAT SECONDS CMD...: until CMD succeeds; on timeout show the log of WHAT's process.
wait_for() {
    local what=$1 seconds=$2 deadline; shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ! running "$what"; then
            tail -n 20 "$state/logs/$what.log" >&2 || true
            die "$what exited; its log: $state/logs/$what.log"
        fi
        ((SECONDS < deadline)) || { tail -n 20 "$state/logs/$what.log" >&2; die "$what not ready after ${seconds}s"; }
        sleep 0.5
    done
}

free_port() { ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

certificates() {
    local pki=$state/pki
    mkdir -p "$pki"
    (
        cd "$pki"
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=modelstack-local-ca" \
            -keyout ca.key -out ca.crt 2>/dev/null
        # One certificate serves the API server and identifies the admin (and the control plane's
        # clients): system:masters, for 127.0.0.1 and the in-cluster names of the kubernetes Service.
        printf '%s\n' "[v3]" "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth,clientAuth" \
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
            >admin.ext
        openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=modelstack-admin" \
            -keyout admin.key -out admin.csr 2>/dev/null
        openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
            -extfile admin.ext -extensions v3 -out admin.crt 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        chmod 600 ./*.key
    )
    cat >"$state/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $context
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority: $pki/ca.crt
users:
- name: $context-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: $context
  context: {cluster: $context, user: $context-admin}
current-context: $context
EOF
    chmod 600 "$state/kubeconfig"
}

write_env() {
    {
        echo "$tools_env"
        # The language host tools/build.sh makes runs the python3 on PATH: the project's venv.
        echo "export PATH=\"$repo/.venv/bin:\$PATH\""
        echo "export KUBECONFIG=\"$state/kubeconfig\""
        echo "export MODELSTACK_REGISTRY=\"127.0.0.1:$registry_port\""
        # docker-build finds the modelstack-local builder in buildx's store under DOCKER_CONFIG.
        echo "export DOCKER_CONFIG=\"$state/docker\""
        # Nothing is downloaded: plugins come from tools/build.sh, the CLI never checks for updates.
        echo "export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"
        echo "export PULUMI_IGNORE_AMBIENT_PLUGINS=true"
    } >"$state/env.sh"
}

up() {
    if running kube-apiserver; then log "already up ($state)"; return 0; fi
    for cmd in openssl docker-registry; do
        command -v "$cmd" >/dev/null || die "$cmd is not installed; run scripts/install-system-deps.sh"
    done
    for port in "$apiserver_port" "$etcd_port" "$((etcd_port + 1))" "$registry_port"; do
        free_port "$port" || die "port $port on 127.0.0.1 is taken; stop what uses it or set MODELSTACK_*_PORT"
    done
    if [[ -n $sudo ]] && ! sudo -n true 2>/dev/null; then
        die "buildkitd needs root: run as root, or with passwordless sudo"
    fi
    tools_env=$("$repo/tools/build.sh")
    eval "$tools_env"
    "$repo/scripts/start-dockerd.sh" >/dev/null

    rm -rf "$state" && mkdir -p "$state"/{logs,pids,registry} && mkdir -m 700 "$state/etcd"
    certificates
    local pki=$state/pki kubeconfig=$state/kubeconfig
    export KUBECONFIG=$kubeconfig

    start etcd etcd --name local --data-dir "$state/etcd" --unsafe-no-fsync \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
        --initial-cluster "local=http://127.0.0.1:$((etcd_port + 1))"
    wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

    # --allow-privileged: privileged pods are then refused by Pod Security admission, not by this flag.
    # --endpoint-reconciler-type=none: the kubernetes Service cannot point at a loopback address.
    start kube-apiserver kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$apiserver_port" \
        --tls-cert-file "$pki/admin.crt" --tls-private-key-file "$pki/admin.key" --client-ca-file "$pki/ca.crt" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --service-cluster-ip-range 10.96.0.0/16 --authorization-mode Node,RBAC --allow-privileged=true \
        --endpoint-reconciler-type none --profiling=false
    wait_for kube-apiserver 120 kubectl get --raw /readyz

    start kube-controller-manager kube-controller-manager --kubeconfig "$kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --root-ca-file "$pki/ca.crt" \
        --service-account-private-key-file "$pki/sa.key" --profiling=false
    start kube-scheduler kube-scheduler --kubeconfig "$kubeconfig" --bind-address 127.0.0.1 --secure-port 0 \
        --leader-elect=false --profiling=false
    start kwok kwok --kubeconfig "$kubeconfig" --manage-all-nodes=true --config "$KWOK_STAGES" \
        --cidr 10.244.0.0/16 --node-ip 127.0.0.1 --node-lease-duration-seconds 40
    kubectl apply -f "$repo/local-cluster/node.yaml" >/dev/null
    wait_for kwok 60 kubectl wait --for=condition=Ready node/kwok-node-0 --timeout=1s
    # Pods wait for their service account, which the controller manager makes per namespace.
    wait_for kube-controller-manager 60 kubectl get serviceaccount default -n default

    cat >"$state/registry.yaml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $state/registry}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$registry_port}
EOF
    start registry docker-registry serve "$state/registry.yaml"
    wait_for registry 30 curl -sf "http://127.0.0.1:$registry_port/v2/"

    # The image's base, made without pulling anything (debootstrap + docker import), in the registry.
    local base=127.0.0.1:$registry_port/modelstack-base:bookworm-py311
    docker tag "$("$repo/scripts/base-image.sh")" "$base" && docker push -q "$base" >/dev/null

    # BuildKit on the host, plain HTTP to the loopback registry; buildx's remote driver connects to it.
    mkdir -p "$state/buildkit" "$state/docker"
    printf '%s\n' "[worker.oci]" "  enabled = true" "[worker.containerd]" "  enabled = false" \
        "[registry.\"127.0.0.1:$registry_port\"]" "  http = true" >"$state/buildkitd.toml"
    start buildkitd $sudo env PATH="$PATH:/usr/sbin:/sbin" buildkitd --addr "unix://$state/buildkitd.sock" \
        --root "$state/buildkit" --config "$state/buildkitd.toml"
    wait_for buildkitd 30 test -S "$state/buildkitd.sock"
    $sudo chown "$(id -u):$(id -g)" "$state/buildkitd.sock"
    DOCKER_CONFIG=$state/docker buildx create --name modelstack-local --driver remote \
        "unix://$state/buildkitd.sock" >/dev/null
    wait_for buildkitd 30 env DOCKER_CONFIG="$state/docker" buildx inspect --bootstrap modelstack-local

    write_env
    log "up: kubectl context $context, registry 127.0.0.1:$registry_port; eval \"\$(local-cluster/cluster.sh env)\""
}

down() {
    local name pid
    for ((i = ${#processes[@]} - 1; i >= 0; i--)); do
        name=${processes[i]}
        [[ -f $state/pids/$name.pid ]] || continue
        pid=$(cat "$state/pids/$name.pid")
        if $sudo kill -0 "$pid" 2>/dev/null; then
            $sudo kill -TERM "$pid"
            for _ in $(seq 100); do $sudo kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            $sudo kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$state/pids/$name.pid"
    done
    $sudo rm -rf --one-file-system "$state"
    log "down"
}

status() {
    local name rc=0
    for name in "${processes[@]}"; do
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
    *) die "usage: local-cluster/cluster.sh up|down|env|status" ;;
esac
