#!/usr/bin/env bash
# Refresh the dependency locks and, when a lock changed, open a pull request with them (the weekly
# job of .github/workflows/locks.yml). Tests never re-resolve against the live index (it moves on its
# own); this is where a moved index shows, as a reviewable diff.
#   scripts/ci/lock-pr.sh
#   GH_TOKEN           a token that may push a branch and open a pull request (the job's GITHUB_TOKEN)
#   GITHUB_REPOSITORY  owner/name, set by Actions
#   GITHUB_SERVER_URL  default https://github.com
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"
cd_root

[[ -n "${GH_TOKEN:-}" ]] || die 2 "set GH_TOKEN to a token that may push a branch and open a pull request"
[[ -n "${GITHUB_REPOSITORY:-}" ]] || die 2 "set GITHUB_REPOSITORY (owner/name)"

make lock
changed=$(git status --porcelain -- 'requirements*.txt' '*/requirements*.txt')
if [[ -z "$changed" ]]; then
  echo "lock-pr: every lock is what its input resolves to today; nothing to do"
  exit 0
fi

branch=locks/refresh-$(date -u +%Y-%m-%d)
git switch -c "$branch"
git add -- 'requirements*.txt' '*/requirements*.txt'
git -c user.name="modelstack locks" -c user.email="locks@users.noreply.github.com" \
  commit -q -m "locks: refreshed (make lock): the package index resolves differently than the committed locks"
# The checkout keeps no credentials (persist-credentials: false): the token is handed to this push only.
server=${GITHUB_SERVER_URL:-https://github.com}
git -c "http.extraheader=Authorization: basic $(printf 'x-access-token:%s' "$GH_TOKEN" | base64 -w0)" \
  push -q "$server/$GITHUB_REPOSITORY.git" "HEAD:refs/heads/$branch"
gh pr create --repo "$GITHUB_REPOSITORY" --head "$branch" --title "locks: refreshed (make lock)" \
  --body "\`make lock\` resolves differently than the committed locks (\`make lock-check\` fails). Changed: $(echo "$changed" | awk '{print $2}' | paste -sd, -)."
