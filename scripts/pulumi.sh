#!/usr/bin/env bash
# Run a Pulumi command on a stack with the project's defaults:
#   scripts/pulumi.sh STACK COMMAND [ARGS...]
# - state in a local file backend under the repo (.modelstack/state) unless
#   PULUMI_BACKEND_URL is set (e.g. s3://... for a team);
# - a passphrase secrets provider; the passphrase comes from
#   PULUMI_CONFIG_PASSPHRASE(_FILE), or for dev-like stacks from a generated,
#   git-ignored file .modelstack/passphrase;
# - the stack is selected, or created on first use (a stack without a Pulumi.STACK.yaml starts from
#   dev's and pushes to dev's registry);
# - its config is a git-ignored working copy (.modelstack/Pulumi.STACK.yaml, scripts/stack_config.py):
#   salts, secrets and local overrides never touch the tracked files;
# - dev-like stacks that run Grafana get a generated admin password on first use;
# - preview and up run the policy pack (policy/): a mandatory violation stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

stack=${1:?usage: scripts/pulumi.sh STACK COMMAND [ARGS...]}
command=${2:?usage: scripts/pulumi.sh STACK COMMAND [ARGS...]}
shift 2

.venv/bin/python scripts/preflight.py "$stack" "$command"

mkdir -p .modelstack/state
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$PWD/.modelstack/state}
if [[ -z "${PULUMI_CONFIG_PASSPHRASE:-}" && -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]]; then
  if [[ "$stack" == prod ]]; then
    echo "error: set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) for the prod stack's secrets" >&2
    exit 2
  fi
  if [[ ! -s .modelstack/passphrase ]]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' > .modelstack/passphrase)
  fi
  export PULUMI_CONFIG_PASSPHRASE_FILE=$PWD/.modelstack/passphrase
fi

# Every command reads the stack's working copy (.modelstack/Pulumi.STACK.yaml, scripts/stack_config.py):
# the tracked file merged with this machine's salt, secrets and overrides, so the tracked file stays
# as it is. A fresh clone's copy has no salt yet: the stack's state has it.
export PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER=true
work=$(.venv/bin/python scripts/stack_config.py "$stack")
config_file=(--config-file "$work")

if ! pulumi stack select "$stack" 2>/dev/null; then
  # `stack init` writes the new salt into Pulumi.STACK.yaml: it goes into the working copy, and that file
  # is put back as it was (or removed, for a stack without one).
  project_file=Pulumi.$stack.yaml saved=$(mktemp) created=$(mktemp) existed=false
  if [[ -f $project_file ]]; then cp "$project_file" "$saved" && existed=true; fi
  restore() { if $existed; then cp "$saved" "$project_file"; else rm -f "$project_file"; fi; rm -f "$saved"; }
  pulumi stack init "$stack" --secrets-provider passphrase || { restore; exit 1; }
  cp "$project_file" "$created" && restore
  .venv/bin/python scripts/stack_config.py "$stack" --init-from "$created" >/dev/null
  rm -f "$created"
fi

if [[ "$stack" != prod ]] && .venv/bin/python scripts/preflight.py --runs-grafana "$stack" &&
   ! pulumi config get grafanaAdminPassword --stack "$stack" "${config_file[@]}" >/dev/null 2>&1; then
  .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))' \
    | pulumi config set --secret grafanaAdminPassword --stack "$stack" "${config_file[@]}"
fi

policy=()
if [[ "$command" == preview || "$command" == up || "$command" == update ]]; then
  policy=(--policy-pack policy/analyzer)
fi
[[ "$command" =~ ^(up|update|preview|destroy|refresh|config)$ ]] || config_file=()
# `stack rm` would delete the tracked Pulumi.STACK.yaml; the working copy's salt is replaced on the next init.
[[ "$command" == stack && "${1:-}" == rm ]] && set -- "$@" --preserve-config
exec pulumi "$command" --stack "$stack" "${config_file[@]}" "${policy[@]}" "$@"
