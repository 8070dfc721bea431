#!/usr/bin/env bash
# The main job (`make up`, `make destroy`): a stack up or down, with whatever it needs first.
#   scripts/up.sh up STACK [PULUMI ARGS...]       STACK local (the default of `make up`): the Pulumi CLI and
#                                                 the embedded cluster (local-cluster/) are built and started
#                                                 when missing; at the end, the endpoint and a curl line that
#                                                 gets a prediction from a pod
#   scripts/up.sh preview STACK [PULUMI ARGS...]  `pulumi preview --diff`, with the same set-up as up
#   scripts/up.sh destroy STACK [PULUMI ARGS...]  `pulumi destroy`; for local, then the cluster stops
# Other stacks use the `pulumi` on PATH, or the one tools/build.sh builds when there is none, and a
# cluster of their own (kind for dev, EKS for prod: scripts/preflight.py says what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/up.sh up|preview|destroy STACK [PULUMI ARGS...]"
command=${1:?$usage}
stack=${2:?$usage}
[[ $command =~ ^(up|preview|destroy)$ ]] || { echo "$usage" >&2; exit 2; }
shift 2
embedded=false
[[ $stack == local ]] && embedded=true

say() { echo "make $command: $*" >&2; }

# As scripts/pulumi.sh: state in .modelstack/state unless the caller names a backend.
mkdir -p .modelstack/state
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$PWD/.modelstack/state}

# The local stack's objects and images live in the cluster, whose state `down` removes: a stack left in
# the backend from an earlier cluster describes nothing that exists. Its config file stays.
forget_stale_local_stack() {
  if pulumi stack ls --json 2>/dev/null | grep -q '"name": "local"'; then
    say "the local stack's objects went with an earlier cluster; starting the stack anew"
    pulumi stack rm local --force --yes --preserve-config >/dev/null
  fi
}

if $embedded; then
  running=true
  local-cluster/cluster.sh status >/dev/null 2>&1 || running=false
  if [[ $command == destroy ]] && ! $running; then
    eval "$(tools/build.sh)"
    forget_stale_local_stack
    local-cluster/cluster.sh down
    exit 0
  fi
  local-cluster/cluster.sh up
  eval "$(local-cluster/cluster.sh env)"
  $running || forget_stale_local_stack
elif ! command -v pulumi >/dev/null; then
  # What else is missing is said first: the build takes minutes the first time.
  .venv/bin/python scripts/preflight.py --no-cli "$stack" "$command"
  say "no Pulumi CLI on PATH: using the one tools/build.sh builds from Go modules"
  eval "$(tools/build.sh)"
fi

if [[ $command == destroy ]]; then
  scripts/pulumi.sh "$stack" destroy "$@"
  if $embedded; then
    pulumi stack rm "$stack" --yes --preserve-config >/dev/null
    local-cluster/cluster.sh down
  fi
  exit 0
fi

if [[ $command == preview ]]; then
  exec scripts/pulumi.sh "$stack" preview --diff "$@"
fi
scripts/pulumi.sh "$stack" up "$@"
$embedded || exit 0

# The answer from a pod: one validation row through the Service's ClusterIP (kube-proxy routes it from
# this machine), and the curl line that does it again.
output() { pulumi stack output "$1" --stack "$stack"; }
namespace=$(output namespace) model=$(output modelName) endpoint=$(output endpoint)
service=${endpoint#http://} service=${service%%.*} port=${endpoint##*:}
ip=$(kubectl -n "$namespace" get service "$service" -o jsonpath='{.spec.clusterIP}')
artifact=$(output modelArtifact) artifact=${artifact#file://}
data=$(scripts/pulumi.sh "$stack" config get --path model.validationData)
body=.modelstack/$stack-request.json
.venv/bin/python -m scripts.sample_request "$artifact" "$data" "$body"
url=http://$ip:$port/v2/models/$model/infer
answer=$(curl -sS --fail-with-body --max-time 30 -H 'Content-Type: application/json' -d @"$body" "$url")
say "$model answers from its pods at http://$ip:$port (Service $service in namespace $namespace):"
echo "$answer"
echo
echo "  curl -s -H 'Content-Type: application/json' -d @$body $url"
echo "  kubectl -n $namespace get pods    # KUBECONFIG: eval \"\$(local-cluster/cluster.sh env)\""
