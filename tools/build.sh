#!/usr/bin/env bash
# Build, from Go modules, the tools `make e2e` runs, into a per-user cache outside the repo:
#   pulumi + pulumi-language-python (+ its exec shim)   the Pulumi CLI and its Python language host
#   pulumi-resource-kubernetes, -docker-build          provider plugins, installed into PULUMI_HOME
#   etcd, kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubectl                            a Kubernetes control plane
#   kubelet, kube-proxy, containerd (+ shim, ctr),
#   runc, coredns, pause                               a real node: pods run, Services route, names resolve
#   prometheus, metrics-server                         the local stack's in-cluster Prometheus; CPU figures for HPAs
#   rollouts-controller (+ its install manifest)       Argo Rollouts: canary releases with analysis and rollback
#   kube-router                                        its network-policy controller alone: NetworkPolicies enforced
#   keda, keda-adapter, -admission-webhooks (+ manifest) KEDA: scaling on the servers' own queue metric
#   buildkitd, buildx                                  the image builder docker-build drives (remote driver)
#   act                                                runs the GitHub workflows here (e2e/test_workflows.py)
# Each tool lands in its own directory keyed by its version and recipe; a complete one is never
# rebuilt, so a second run does nothing. An official `pulumi` on PATH (with its language host
# beside it) at a version not older than the Python SDK pin is used as it is.
#
#   tools/build.sh         build what is missing; print `export` lines for PATH and PULUMI_HOME
#
#   MODELSTACK_TOOLS   the cache (default ${XDG_CACHE_HOME:-~/.cache}/modelstack/tools)
# Needs Go (go.mod files here ask for >= 1.26) and the Go module proxy; the first time about 26 minutes
# of 2 cores, 2.3 GB of modules and 3.1 GB of build cache (docs/benchmarks.md).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${MODELSTACK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/modelstack/tools}

# Versions. The plugin versions are the ones the Python SDK pins ask for (tests/test_tools.py checks).
PULUMI_VERSION=3.276.0
# The proxy does not serve the language host's own module (sdk/python/cmd/pulumi-language-python/v3);
# sdk/v3 v3.79.0 is the newest release that still carries it inside the SDK module (README: why that works).
LANGUAGE_HOST_SDK_VERSION=3.79.0
KUBERNETES_PROVIDER_VERSION=4.25.0
# The only version of provider/v4 the proxy serves: the commit right before the v4.25.0 release commit.
KUBERNETES_PROVIDER_MODULE=v4.0.0-20260115033456-f47bc2d6f199
DOCKER_BUILD_PROVIDER_VERSION=0.0.22
KUBERNETES_VERSION=1.36.3
ETCD_VERSION=3.6.16
# The node: containerd 2.3 (LTS; Kubernetes 1.36 needs containerd >= 2.0, and 2.x keeps cgroup v1),
# runc 1.4 (still runs on cgroup v1, deprecated there), CoreDNS for Service names.
CONTAINERD_VERSION=2.3.7
RUNC_VERSION=1.4.4
COREDNS_VERSION=1.15.0
# Prometheus 3.16 (its module's v0.316.0): Debian's package leaves Kubernetes service discovery out.
PROMETHEUS_VERSION=3.16.0
PROMETHEUS_MODULE=v0.316.0
# metrics-server 0.8.0 (the HPA's CPU figures; 0.9.x asks for a newer Go than ours).
METRICS_SERVER_VERSION=0.8.0
# Argo Rollouts 1.10.1: 1.10.2 asks for Go 1.26.10, newer than ours.
ARGO_ROLLOUTS_VERSION=1.10.1
# kube-router 2.1.0: the only version of its /v2 module the proxy serves (local-cluster/README.md: why it is used).
KUBE_ROUTER_VERSION=2.1.0
# KEDA 2.21.0: 2.21.1 asks for Go 1.27.4, newer than ours.
KEDA_VERSION=2.21.0
# BuildKit of the client docker-build v0.0.22 embeds (v0.31), and that provider's buildx.
BUILDKIT_VERSION=0.31.2
BUILDX_VERSION=0.35.0
# act, in its self-hosted mode: the workflows' jobs run on this machine.
ACT_VERSION=0.2.89

export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0

log() { echo "tools: $*" >&2; }
die() { echo "tools: $*" >&2; exit 1; }

command -v go >/dev/null || die "Go is not installed; install Go >= 1.26 (https://go.dev/doc/install) and run again"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ $go_minor =~ ^[0-9]+$ && $go_minor -ge 26 ]] || die "Go $(go env GOVERSION) is too old; the modules here need Go >= 1.26"

# key NAME FUNCTION VALUE...: a directory name that changes with the wrapper module tools/modules/NAME (if
# any), the build FUNCTION's own text, the VALUEs (versions) and Go's version.
key() {
    local name=$1 fn=$2; shift 2
    {
        printf '%s\n' "$@" "$(go env GOVERSION)"
        declare -f "$fn" wrapper_build module_dir || true
        if [[ -d $here/modules/$name ]]; then find "$here/modules/$name" -type f -print0 | sort -z | xargs -0 cat; fi
    } | sha256sum | cut -c1-12
}

# build NAME DIR MINUTES CMD...: run CMD in a fresh work directory unless DIR is complete; DIR appears only
# when done. MINUTES: what it took on 2 cores with empty Go caches (docs/benchmarks.md), for the progress line.
build() {
    local name=$1 dir=$2 minutes=$3; shift 3
    [[ -f $dir/.complete ]] && return 0
    local work=$dir.work start=$SECONDS
    rm -rf "$work" && mkdir -p "$work/bin"
    log "building $name: about $minutes min on 2 cores the first time (log: $work.log)"
    if ! (cd "$work" && "$@") >"$work.log" 2>&1; then
        tail -n 20 "$work.log" >&2
        die "building $name failed; full log in $work.log"
    fi
    echo "$((SECONDS - start))" > "$work/bin/.build-seconds"
    rm -rf "$dir" && mv "$work/bin" "$dir" && rm -rf "$work" "$work.log"
    touch "$dir/.complete"
    log "built $name in $((SECONDS - start)) s"
}

# wrapper_build NAME LDFLAGS TAGS PACKAGE...: build the wrapper module tools/modules/NAME (its go.mod and
# go.sum pin every module; `go install mod@version` refuses modules with replace lines) into bin/.
wrapper_build() {
    local name=$1 ldflags=$2 tags=$3; shift 3
    mkdir "mod-$name" && cp -r "$here/modules/$name/." "mod-$name/"
    (cd "mod-$name" && go build -trimpath ${tags:+-tags "$tags"} -ldflags "$ldflags" -o ../bin/ "$@")
}

module_dir() { go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'; }

pulumi_cli() {
    wrapper_build pulumi "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
        osusergo,grpcnotrace github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    wrapper_build pulumi-language-python "" "" github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python
    # What the release puts beside the CLI, shipped as scripts in the SDK module of the CLI's version:
    # the shim the language host runs, and the plugin that serves dynamic providers (OptimizedModel).
    local sdk
    sdk=$(module_dir "github.com/pulumi/pulumi/sdk/v3@v$PULUMI_VERSION")/python
    install -m 0755 "$sdk/cmd/pulumi-language-python-exec" "$sdk/dist/pulumi-resource-pulumi-python" bin/
}

kubernetes_provider() {
    # The module ships without the files its main package embeds, and replaces the SDK with ../sdk:
    # copy it, point the SDK at its published release, generate the embedded schema, build.
    cp -r "$(module_dir "github.com/pulumi/pulumi-kubernetes/provider/v4@$KUBERNETES_PROVIDER_MODULE")" provider
    chmod -R u+w provider
    (
        cd provider
        go mod edit -replace="github.com/pulumi/pulumi-kubernetes/sdk/v4=github.com/pulumi/pulumi-kubernetes/sdk/v4@v$KUBERNETES_PROVIDER_VERSION"
        GOFLAGS=-mod=mod go mod download github.com/pulumi/pulumi-kubernetes/sdk/v4  # adds its go.sum lines
        (cd cmd/pulumi-resource-kubernetes && VERSION=$KUBERNETES_PROVIDER_VERSION go run generate.go)
        go build -trimpath -o ../bin/ \
            -ldflags "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$KUBERNETES_PROVIDER_VERSION" \
            ./cmd/pulumi-resource-kubernetes
    )
}

docker_build_provider() {
    # Its schema names pulumi-java and pulumi-dotnet codegen types, which the proxy does not serve:
    # modules/docker-build/stubs stand in for those two metadata structs (nothing else uses them).
    wrapper_build docker-build "-X github.com/pulumi/pulumi-docker-build/provider.Version=$DOCKER_BUILD_PROVIDER_VERSION" "" \
        github.com/pulumi/pulumi-docker-build/provider/cmd/pulumi-resource-docker-build
}

# What hack/lib/version.sh sets: clients (the kubernetes provider among them) check the server version.
kubernetes_ldflags() {
    local major=${KUBERNETES_VERSION%%.*} minor ldflags="" pkg
    minor=${KUBERNETES_VERSION#*.}; minor=${minor%%.*}
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags+=" -X $pkg.gitVersion=v$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean"
    done
    echo "$ldflags"
}

control_plane() {
    wrapper_build kubernetes "$(kubernetes_ldflags)" selinux,notest \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kubectl
    wrapper_build etcd "" "" go.etcd.io/etcd/server/v3
    mv bin/server bin/etcd  # go names the binary after the module path's last element before /v3
}

node() {
    wrapper_build kubernetes "$(kubernetes_ldflags)" selinux,notest k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
    local pkg=github.com/containerd/containerd/v2 src
    wrapper_build containerd "-X $pkg/version.Version=v$CONTAINERD_VERSION -X $pkg/version.Package=$pkg" "" \
        $pkg/cmd/containerd $pkg/cmd/containerd-shim-runc-v2 $pkg/cmd/ctr
    # runc applies the pods' RuntimeDefault seccomp profile through libseccomp (cgo), as its release does.
    CGO_ENABLED=1 wrapper_build runc "" seccomp,urfave_cli_no_docs github.com/opencontainers/runc
    wrapper_build coredns "" "" github.com/coredns/coredns
    # Only the service discovery the stack's scrape config uses (its build tags drop the other 30).
    wrapper_build prometheus "-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
        remove_all_sd,enable_kubernetes_sd github.com/prometheus/prometheus/cmd/prometheus
    wrapper_build metrics-server "" "" sigs.k8s.io/metrics-server/cmd/metrics-server
    # The sandbox ("pause") container: its source ships in the kubernetes module; static, for a scratch image.
    src=$(module_dir "k8s.io/kubernetes@v$KUBERNETES_VERSION")/build/pause/linux/pause.c
    gcc -Os -Wall -Werror -static -DVERSION="v$KUBERNETES_VERSION-modelstack" -o bin/pause "$src"
}

# Argo Rollouts' controller, and the install manifest of the same release (CRDs, RBAC, Deployment); kube-router,
# whose network-policy controller the local cluster runs alone (no routing, no service proxy).
controllers() {
    wrapper_build argo-rollouts "-X github.com/argoproj/argo-rollouts/utils/version.version=$ARGO_ROLLOUTS_VERSION" "" \
        github.com/argoproj/argo-rollouts/cmd/rollouts-controller
    install -m 0644 "$(module_dir "github.com/argoproj/argo-rollouts@v$ARGO_ROLLOUTS_VERSION")/manifests/install.yaml" \
        bin/argo-rollouts-install.yaml
    wrapper_build kube-router "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v$KUBE_ROUTER_VERSION" "" \
        github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
}

# KEDA's operator, metrics API server (adapter) and admission webhooks, and its install manifest: the
# module's kustomize tree (config/default) rendered by the kubectl just built.
keda() {
    wrapper_build keda "-X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION" "" \
        github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter \
        github.com/kedacore/keda/v2/cmd/webhooks
    # The names KEDA's own images give them, which its manifest's `command:` lines name.
    mv bin/operator bin/keda && mv bin/adapter bin/keda-adapter && mv bin/webhooks bin/keda-admission-webhooks
    "$control_plane_dir/kubectl" kustomize "$(module_dir "github.com/kedacore/keda/v2@v$KEDA_VERSION")/config/default" \
        >bin/keda-install.yaml
}

builder() {
    # buildkitd reports its version to docker-build, which picks features by it.
    wrapper_build buildkit "-X github.com/moby/buildkit/version.Version=v$BUILDKIT_VERSION \
        -X github.com/docker/buildx/version.Version=v$BUILDX_VERSION" osusergo,netgo \
        github.com/moby/buildkit/cmd/buildkitd github.com/docker/buildx/cmd/buildx
}

workflow_runner() {
    wrapper_build act "-X main.version=$ACT_VERSION" "" github.com/nektos/act
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one build at a time per cache

# The CLI: an official one on PATH when it is new enough (what users have), else our build.
sdk_pin=$(sed -n 's/^pulumi==\([0-9.]*\).*/\1/p' "$repo/requirements.in")
pulumi_dir=""
if official=$(command -v pulumi) && [[ $official != "$cache"/* ]] \
    && [[ -x $(dirname "$official")/pulumi-language-python ]]; then
    have=$(pulumi version 2>/dev/null | sed 's/^v//')
    if [[ -n $have && $(printf '%s\n' "$sdk_pin" "$have" | sort -V | head -n1) == "$sdk_pin" ]]; then
        pulumi_dir=$(dirname "$official")
        log "using the Pulumi CLI on PATH ($official, v$have)"
    fi
fi
if [[ -z $pulumi_dir ]]; then
    pulumi_dir=$cache/pulumi-$PULUMI_VERSION-$(key pulumi pulumi_cli "$PULUMI_VERSION" "$LANGUAGE_HOST_SDK_VERSION" \
        "$(key pulumi-language-python :)")
    build "pulumi $PULUMI_VERSION" "$pulumi_dir" 6 pulumi_cli
fi

k8s_provider_dir=$cache/pulumi-resource-kubernetes-$KUBERNETES_PROVIDER_VERSION-$(key - kubernetes_provider \
    "$KUBERNETES_PROVIDER_VERSION" "$KUBERNETES_PROVIDER_MODULE")
build "pulumi-resource-kubernetes $KUBERNETES_PROVIDER_VERSION" "$k8s_provider_dir" 9 kubernetes_provider
docker_build_dir=$cache/pulumi-resource-docker-build-$DOCKER_BUILD_PROVIDER_VERSION-$(key docker-build docker_build_provider \
    "$DOCKER_BUILD_PROVIDER_VERSION")
build "pulumi-resource-docker-build $DOCKER_BUILD_PROVIDER_VERSION" "$docker_build_dir" 3 docker_build_provider
control_plane_dir=$cache/kubernetes-$KUBERNETES_VERSION-$(key kubernetes control_plane \
    "$KUBERNETES_VERSION" "$ETCD_VERSION" "$(key etcd :)" "$(declare -f kubernetes_ldflags)")
build "kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION" "$control_plane_dir" 6 control_plane
node_dir=$cache/node-$KUBERNETES_VERSION-$(key kubernetes node "$KUBERNETES_VERSION" "$CONTAINERD_VERSION" \
    "$RUNC_VERSION" "$COREDNS_VERSION" "$PROMETHEUS_VERSION" "$PROMETHEUS_MODULE" "$(key containerd :)" "$(key runc :)" "$(key coredns :)" \
    "$(key prometheus :)" "$METRICS_SERVER_VERSION" "$(key metrics-server :)" "$(declare -f kubernetes_ldflags)")
build "kubelet and kube-proxy $KUBERNETES_VERSION, containerd $CONTAINERD_VERSION, runc $RUNC_VERSION, coredns $COREDNS_VERSION, prometheus $PROMETHEUS_VERSION, metrics-server $METRICS_SERVER_VERSION" \
    "$node_dir" 5 node
controllers_dir=$cache/controllers-$(key argo-rollouts controllers "$ARGO_ROLLOUTS_VERSION" "$KUBE_ROUTER_VERSION" \
    "$(key kube-router :)")
build "argo-rollouts $ARGO_ROLLOUTS_VERSION, kube-router $KUBE_ROUTER_VERSION" "$controllers_dir" 4 controllers
keda_dir=$cache/keda-$KEDA_VERSION-$(key keda keda "$KEDA_VERSION")
build "keda $KEDA_VERSION" "$keda_dir" 10 keda
builder_dir=$cache/buildkit-$BUILDKIT_VERSION-$(key buildkit builder "$BUILDKIT_VERSION" "$BUILDX_VERSION")
build "buildkit $BUILDKIT_VERSION, buildx $BUILDX_VERSION" "$builder_dir" 2 builder
act_dir=$cache/act-$ACT_VERSION-$(key act workflow_runner "$ACT_VERSION")
build "act $ACT_VERSION" "$act_dir" 2 workflow_runner

# Plugins go into a PULUMI_HOME of our own (never the user's ~/.pulumi), from the files just built.
pulumi_home=$cache/pulumi-home
install_plugin() {
    local name=$1 version=$2 dir=$3 marker
    marker=$pulumi_home/plugins/.modelstack-$name-$version
    [[ -f $marker && $(cat "$marker") == "$dir" ]] && return 0
    PULUMI_HOME=$pulumi_home "$pulumi_dir/pulumi" plugin install resource "$name" "$version" \
        --file "$dir/pulumi-resource-$name" --reinstall >&2
    echo "$dir" > "$marker"
}
export PULUMI_SKIP_UPDATE_CHECK=true
install_plugin kubernetes "$KUBERNETES_PROVIDER_VERSION" "$k8s_provider_dir"
install_plugin docker-build "$DOCKER_BUILD_PROVIDER_VERSION" "$docker_build_dir"

echo "export PATH=\"$pulumi_dir:$control_plane_dir:$builder_dir:$node_dir:$controllers_dir:$keda_dir:$act_dir:\$PATH\""
echo "export PULUMI_HOME=\"$pulumi_home\""
