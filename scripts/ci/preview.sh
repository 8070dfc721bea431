#!/usr/bin/env bash
# Preview each stack and write one pull-request comment body:
#   scripts/ci/preview.sh STACK [STACK...]
# env: PULUMI_BACKEND_URL or PULUMI_ACCESS_TOKEN (required: CI never uses a local backend),
#      PULUMI_CONFIG_PASSPHRASE(_FILE) for passphrase stacks,
#      MODELSTACK_CI_OUT  where to write (default .modelstack/ci under the repo root).
# Writes MODELSTACK_CI_OUT/preview.md (first line <!-- modelstack:preview:STACK,... -->, trimmed to GitHub's
# comment limit) and preview-STACK.log per stack. Exits 1 if any preview failed, after writing the
# body, so the comment is still posted; 2 on bad usage. Called by .github/workflows/pull-request.yml.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -ge 1 ]] || die 2 "usage: scripts/ci/preview.sh STACK [STACK...]"
for stack in "$@"; do require_stack_name "$stack"; done
out=${MODELSTACK_CI_OUT:-}
[[ -z "$out" || "$out" == /* ]] || out=$PWD/$out  # relative to where the caller stands
cd_root
out=${out:-$PWD/.modelstack/ci}
require_backend
mkdir -p "$out"

render_args=()
failed=0
for stack in "$@"; do
  log="$out/preview-${stack//\//_}.log"
  if [[ "${GITHUB_ACTIONS:-}" == true ]]; then echo "::group::pulumi preview --stack $stack"; fi
  # The whole output goes to the job log too: the comment may be trimmed.
  set +o errexit
  pulumi preview --diff --stack "$stack" --non-interactive --color never --policy-pack "$POLICY_PACK" 2>&1 \
    | tee "$log"
  rc=${PIPESTATUS[0]}
  set -o errexit
  if [[ "${GITHUB_ACTIONS:-}" == true ]]; then echo "::endgroup::"; fi
  [[ $rc -eq 0 ]] || failed=1
  render_args+=("$stack" "$rc" "$log")
done

"$(python_bin)" scripts/ci/preview_body.py "$out/preview.md" "${render_args[@]}"
echo "preview: wrote $out/preview.md"
[[ $failed -eq 0 ]] || die 1 "at least one preview failed (see above)"
