#!/usr/bin/env bash
# Point kubectl at each stack's cluster, and say where it comes from:
#   scripts/ci/kubeconfig.sh STACK [STACK...]
# - MODELSTACK_KUBECONFIG set (a kubeconfig secret, e.g. secrets.DEV_KUBECONFIG: a hosted runner has no
#   cluster of its own): written to RUNNER_TEMP/kubeconfig (mode 600) and exported as KUBECONFIG to the
#   job's later steps (GITHUB_ENV); one file for the STACKs of one job.
# - else cluster.provider eks: `aws eks update-kubeconfig --name cluster.name --region cluster.region
#   --alias cluster.context` (the context the stack's Kubernetes provider is pinned to; AWS
#   credentials must already be in the environment).
# - else (kind, local, existing): the runner's kubeconfig as it is (a self-hosted runner beside the
#   cluster, or act on the machine running the embedded cluster), said in one line.
# env: PULUMI_BACKEND_URL or PULUMI_ACCESS_TOKEN, PULUMI_CONFIG_PASSPHRASE(_FILE), AWS_REGION
# (when cluster.region is not set), MODELSTACK_KUBECONFIG, RUNNER_TEMP and GITHUB_ENV (Actions sets
# them). Called by the jobs of .github/workflows/*.yml before Pulumi runs.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -ge 1 ]] || die 2 "usage: scripts/ci/kubeconfig.sh STACK [STACK...]"
for stack in "$@"; do require_stack_name "$stack"; done
cd_root
require_backend

setting() {  # STACK KEY: the value, or empty when the stack does not set it
  pulumi config get --stack "$1" --path "$2" --non-interactive 2>/dev/null || true
}

if [[ -n "${MODELSTACK_KUBECONFIG:-}" ]]; then
  [[ -n "${GITHUB_ENV:-}" ]] || die 2 "MODELSTACK_KUBECONFIG is set but GITHUB_ENV is not: run it as a workflow step"
  file=${RUNNER_TEMP:-${TMPDIR:-/tmp}}/kubeconfig
  (umask 077 && printf '%s\n' "$MODELSTACK_KUBECONFIG" >"$file")
  echo "KUBECONFIG=$file" >>"$GITHUB_ENV"
  echo "kubeconfig: $*: from the kubeconfig secret (MODELSTACK_KUBECONFIG), for this job's later steps"
  exit 0
fi

for stack in "$@"; do
  # Fail here, not as an empty "setting", when the stack or the backend cannot be read.
  pulumi config --stack "$stack" --non-interactive >/dev/null || die 1 "cannot read the config of $stack (see above)"
  provider=$(setting "$stack" cluster.provider)
  context=$(setting "$stack" cluster.context)
  if [[ "$provider" != eks ]]; then
    echo "kubeconfig: $stack: cluster provider '${provider:-unset}': using the runner's kubeconfig (context ${context:-current})"
    continue
  fi
  name=$(setting "$stack" cluster.name)
  region=$(setting "$stack" cluster.region)
  region=${region:-${AWS_REGION:-}}
  [[ -n "$name" ]] || die 2 "$stack: cluster.provider is eks but cluster.name is not set"
  [[ -n "$region" ]] || die 2 "$stack: set cluster.region in the stack config or AWS_REGION"
  aws eks update-kubeconfig --name "$name" --region "$region" --alias "${context:-$name}"
done
