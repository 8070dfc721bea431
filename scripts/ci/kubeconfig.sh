#!/usr/bin/env bash
# Point kubectl at each stack's cluster, as its config names it:
#   scripts/ci/kubeconfig.sh STACK [STACK...]
# cluster.provider eks: `aws eks update-kubeconfig --name cluster.name --region cluster.region
# --alias cluster.context` (the context the stack's Kubernetes provider is pinned to; AWS
# credentials must already be in the environment). Any other provider (kind, local): the runner's
# kubeconfig is used as it is, said in one line.
# env: PULUMI_BACKEND_URL or PULUMI_ACCESS_TOKEN, PULUMI_CONFIG_PASSPHRASE(_FILE), AWS_REGION
# (when cluster.region is not set). Called by the jobs of .github/workflows/*.yml before Pulumi runs.
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
