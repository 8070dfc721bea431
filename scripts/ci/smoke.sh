#!/usr/bin/env bash
# Smoke-test a deployed stack through the Open Inference Protocol V2 REST API:
#   scripts/ci/smoke.sh STACK
# Reads the stack's outputs (namespace, endpoint, modelName). The endpoint is cluster-internal, so
# unless MODELSTACK_SMOKE_URL gives a reachable base URL, it runs `kubectl port-forward` to the
# Service (in the stack's cluster.context, when configured) and stops it on exit.
# Then: /v2/health/ready is 200 (retried), /v2/models/NAME is 200, an inference on zeros is 200
# with outputs; prints one line with the latency. Any failure: one line, exit 1; bad usage: 2.
# env: PULUMI_BACKEND_URL or PULUMI_ACCESS_TOKEN, MODELSTACK_SMOKE_URL (optional),
#      MODELSTACK_SMOKE_TIMEOUT (seconds to wait for readiness, default 120).
# Called by scripts/ci/pr-stack.sh up.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

one_stack "scripts/ci/smoke.sh STACK" "$@"
py=$(python_bin)

outputs=$(pulumi stack output --json --stack "$stack" --non-interactive) \
  || die 1 "cannot read the outputs of stack $stack (see above)"
values=$("$py" scripts/ci/pulumi_json.py get namespace endpoint modelName <<<"$outputs") || exit 1
{ read -r namespace; read -r endpoint; read -r model; } <<<"$values"

if [[ -n "${MODELSTACK_SMOKE_URL:-}" ]]; then
  base=${MODELSTACK_SMOKE_URL%/}
else
  # http://SERVICE.NAMESPACE.svc.cluster.local:PORT (components/model_service.py)
  [[ "$endpoint" =~ ^https?://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.[a-z0-9.-]+)?:([0-9]+)/?$ ]] \
    || die 1 "endpoint '$endpoint' is not a Service URL to port-forward to; set MODELSTACK_SMOKE_URL"
  service=${BASH_REMATCH[1]}
  port=${BASH_REMATCH[4]}
  command -v kubectl >/dev/null || die 2 "kubectl is not on PATH (or set MODELSTACK_SMOKE_URL)"
  kube=(kubectl)
  # The context the stack deploys to, as its Kubernetes provider is pinned to it.
  if context=$(pulumi config get --stack "$stack" --path cluster.context 2>/dev/null) && [[ -n "$context" ]]; then
    kube+=(--context "$context")
  fi
  pf_log=$(mktemp)
  # Local port 0: kubectl picks a free one and says which.
  "${kube[@]}" port-forward -n "$namespace" "svc/$service" ":$port" >"$pf_log" 2>&1 &
  pf_pid=$!
  trap 'kill "$pf_pid" 2>/dev/null || true; wait "$pf_pid" 2>/dev/null || true; rm -f "$pf_log"' EXIT
  local_port=""
  for _ in $(seq 1 150); do
    local_port=$(grep -oE 'Forwarding from 127\.0\.0\.1:[0-9]+' "$pf_log" | head -n1 | grep -oE '[0-9]+$' || true)
    [[ -n "$local_port" ]] && break
    kill -0 "$pf_pid" 2>/dev/null || die 1 "kubectl port-forward to svc/$service in $namespace failed: $(tail -n1 "$pf_log")"
    sleep 0.2
  done
  [[ -n "$local_port" ]] || die 1 "kubectl port-forward to svc/$service in $namespace did not start within 30 s"
  base=http://127.0.0.1:$local_port
fi

"$py" scripts/ci/smoke_check.py "$base" "$model" "$stack"
