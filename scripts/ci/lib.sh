# Shared by scripts/ci/*.sh (sourced, not run):
#   source "$(dirname "$0")/lib.sh"; ...resolve arguments...; cd_root
# One way to fail, to find Python and to ask the backend the caller chose.
# shellcheck shell=bash

# Every preview and update runs the project's CrossGuard pack (policy/).
# shellcheck disable=SC2034  # read by the scripts that source this file
POLICY_PACK=policy/analyzer
export PULUMI_SKIP_UPDATE_CHECK=true
# A CI checkout's stack files carry no salt (it is each machine's, scripts/stack_config.py): the
# secrets provider comes from the stack's state.
export PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER=true

# One line on stderr, then exit (2: the caller's mistake, 1: a check or a command failed).
die() {
  local code=$1
  shift
  echo "$(basename "$0" .sh): $*" >&2
  exit "$code"
}

# The scripts run from any directory; Pulumi needs the project's.
cd_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
}

# The helpers are stdlib-only: the project's venv when installed, else any python3
# (the comment job installs nothing).
python_bin() {
  if [[ -x .venv/bin/python ]]; then echo .venv/bin/python; else command -v python3; fi
}

# CI never falls back to a local state directory: the caller names the backend.
require_backend() {
  if [[ -z "${PULUMI_BACKEND_URL:-}" && -z "${PULUMI_ACCESS_TOKEN:-}" ]]; then
    die 2 "set PULUMI_BACKEND_URL (e.g. s3://bucket/prefix) or PULUMI_ACCESS_TOKEN (Pulumi Cloud)"
  fi
}

# The preamble of a script taking one STACK: check it, set $stack, go to the project, need a backend.
one_stack() {
  local usage=$1
  shift
  [[ $# -eq 1 ]] || die 2 "usage: $usage"
  require_stack_name "$1"
  stack=$1
  cd_root
  require_backend
}

# A stack name as Pulumi takes it, optionally org/ or org/project/ qualified.
require_stack_name() {
  [[ "$1" =~ ^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$ ]] || die 2 "invalid stack name '$1'"
}

# Whether STACK exists in the backend. A failing `stack ls` (auth, network) stops the script:
# it must never read as "no stack", or destroy would skip a live one.
stack_exists() {
  local listing rc=0
  listing=$(pulumi stack ls --json --non-interactive) || die 1 "pulumi stack ls failed (see above)"
  "$(python_bin)" scripts/ci/pulumi_json.py has-stack "$1" <<<"$listing" || rc=$?
  case $rc in
    0) return 0 ;;
    1) return 1 ;;
    *) exit 1 ;;
  esac
}
