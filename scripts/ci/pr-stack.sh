#!/usr/bin/env bash
# The short-lived stack of a pull request, pr-NUMBER:
#   scripts/ci/pr-stack.sh up NUMBER        create it from the base stack's config if new, update it,
#                                           then scripts/ci/smoke.sh pr-NUMBER
#   scripts/ci/pr-stack.sh destroy NUMBER   destroy its resources and remove it (a no-op if it is gone)
# Like scripts/pulumi.sh's short-lived stacks: the base's config, its own namespace (names derive
# from the stack), the base's registry (registry.manage false when that registry is 'local'), and a
# generated Grafana password when the base has none.
# env: PULUMI_BACKEND_URL or PULUMI_ACCESS_TOKEN, PULUMI_CONFIG_PASSPHRASE(_FILE),
#      MODELSTACK_BASE_STACK (default dev); smoke.sh's MODELSTACK_SMOKE_URL / _TIMEOUT.
# Bad usage: one line, exit 2. Called by .github/workflows/pull-request.yml.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage="usage: scripts/ci/pr-stack.sh up|destroy NUMBER"
[[ $# -eq 2 ]] || die 2 "$usage"
action=$1
number=$2
[[ "$action" == up || "$action" == destroy ]] || die 2 "unknown action '$action'; $usage"
[[ "$number" =~ ^[1-9][0-9]{0,9}$ ]] || die 2 "NUMBER must be a positive integer, got '$number'"
stack=pr-$number
base=${MODELSTACK_BASE_STACK:-dev}
require_stack_name "$base"
cd_root
require_backend

if [[ "$action" == destroy ]]; then
  if ! stack_exists "$stack"; then
    echo "pr-stack: $stack does not exist; nothing to destroy"
    exit 0
  fi
  pulumi destroy --yes --stack "$stack" --non-interactive
  pulumi stack rm --yes --stack "$stack" --non-interactive
  echo "pr-stack: $stack destroyed and removed"
  exit 0
fi

if ! stack_exists "$stack"; then
  pulumi stack init "$stack" --secrets-provider passphrase --copy-config-from "$base" --non-interactive
elif [[ ! -f "Pulumi.$stack.yaml" ]]; then
  # A later run of the same PR: rebuild its config from the base (the state keeps the salt).
  pulumi config cp --stack "$base" --dest "$stack" --non-interactive
fi
if [[ "$(pulumi config get --stack "$stack" --path registry.type 2>/dev/null || true)" == local ]]; then
  # One local registry per cluster, owned by the base stack: push to it, do not run another.
  pulumi config set --stack "$stack" --path registry.manage false --non-interactive
fi
if ! pulumi config get --stack "$stack" grafanaAdminPassword >/dev/null 2>&1; then
  "$(python_bin)" -c 'import secrets; print(secrets.token_urlsafe(18))' \
    | pulumi config set --stack "$stack" --secret grafanaAdminPassword --non-interactive
fi

pulumi up --yes --stack "$stack" --non-interactive --policy-pack "$POLICY_PACK"
scripts/ci/smoke.sh "$stack"
