#!/usr/bin/env bash
# Deploy a long-lived stack and say what it now runs:
#   scripts/ci/deploy.sh STACK
# `pulumi up` with the project's policy pack, then prints the stack's image and modelDigest
# outputs (and adds them to the job summary under GitHub Actions). A stack whose config has
# `modelstack:promote` builds nothing and deploys its source's digests; nothing here differs per stack.
# env: PULUMI_BACKEND_URL or PULUMI_ACCESS_TOKEN, PULUMI_CONFIG_PASSPHRASE(_FILE).
# Exit: pulumi's on a failed update, 1 if the outputs are missing, 2 on bad usage.
# Called by .github/workflows/main.yml (deploy-dev: dev, promote-prod: prod).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

one_stack "scripts/ci/deploy.sh STACK" "$@"

pulumi up --yes --stack "$stack" --non-interactive --policy-pack "$POLICY_PACK"

outputs=$(pulumi stack output --json --stack "$stack" --non-interactive) \
  || die 1 "cannot read the outputs of stack $stack (see above)"
values=$("$(python_bin)" scripts/ci/pulumi_json.py get image modelDigest <<<"$outputs") || exit 1
{ read -r image; read -r digest; } <<<"$values"
echo "deploy: $stack image $image"
echo "deploy: $stack modelDigest $digest"
if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
  # shellcheck disable=SC2016  # the backticks are markdown
  printf '### Deployed `%s`\n\n- image: `%s`\n- modelDigest: `%s`\n' "$stack" "$image" "$digest" >>"$GITHUB_STEP_SUMMARY"
fi
