#!/usr/bin/env bash
# Run a Pulumi command on a stack with the project's defaults:
#   scripts/pulumi.sh STACK COMMAND [ARGS...]
# - state in a local file backend under the repo (.modelstack/state) unless
#   PULUMI_BACKEND_URL is set (e.g. s3://... for a team);
# - a passphrase secrets provider; the passphrase comes from
#   PULUMI_CONFIG_PASSPHRASE(_FILE), or for dev-like stacks from a generated,
#   git-ignored file .modelstack/passphrase;
# - the stack is selected, or created on first use;
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

# The local stack is this machine's own (its own passphrase): its encryption salt goes into a copy of
# Pulumi.local.yaml under .modelstack/, which every command reads, and the tracked file stays as it is.
config_file=()
if [[ "$stack" == local ]]; then
  work=.modelstack/Pulumi.local.yaml
  config_file=(--config-file "$work")
fi
salt_line() { grep -m1 '^encryptionsalt:' "$1" 2>/dev/null || true; }

if ! pulumi stack select "$stack" 2>/dev/null; then
  if [[ "$stack" == local ]]; then
    tracked=$(mktemp) && cp Pulumi.local.yaml "$tracked"
    pulumi stack init "$stack" --secrets-provider passphrase
    salt_line Pulumi.local.yaml >"$work.salt"
    cp "$tracked" Pulumi.local.yaml && rm -f "$tracked"
  elif [[ -f "Pulumi.$stack.yaml" ]]; then  # dev, prod: a stack file of its own
    pulumi stack init "$stack" --secrets-provider passphrase
  else
    # A short-lived stack: dev's config, its own namespace, and dev's registry (one per cluster).
    pulumi stack init "$stack" --secrets-provider passphrase --copy-config-from dev
    pulumi config set --stack "$stack" --path registry.manage false
  fi
fi

if [[ "$stack" == local ]]; then  # the tracked file as it is now, with this machine's salt
  { cat Pulumi.local.yaml; cat "$work.salt" 2>/dev/null || true; } >"$work.tmp" && mv "$work.tmp" "$work"
fi

if [[ "$stack" != prod ]] && .venv/bin/python scripts/preflight.py --runs-grafana "$stack" &&
   ! pulumi config get grafanaAdminPassword >/dev/null 2>&1; then
  .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))' | pulumi config set --secret grafanaAdminPassword
fi

policy=()
if [[ "$command" == preview || "$command" == up || "$command" == update ]]; then
  policy=(--policy-pack policy/analyzer)
fi
[[ "$command" =~ ^(up|update|preview|destroy|refresh|config)$ ]] || config_file=()
exec pulumi "$command" --stack "$stack" "${config_file[@]}" "${policy[@]}" "$@"
