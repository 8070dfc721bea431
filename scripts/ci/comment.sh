#!/usr/bin/env bash
# Create or update this pull request's comment from a file:
#   scripts/ci/comment.sh FILE
# FILE's first line is the marker (e.g. <!-- modelstack:preview:dev -->): the comment whose body
# starts with it is updated, else one is created, so a PR never gets two.
# env: GITHUB_TOKEN, GITHUB_REPOSITORY (owner/name), PR_NUMBER,
#      GITHUB_API_URL (default https://api.github.com; Actions sets it).
# Exit 2 with one line naming what is missing or wrong, 1 when GitHub refuses.
# Called by .github/workflows/pull-request.yml (jobs comment-dev, comment-prod) with preview.sh's preview.md.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -eq 1 ]] || die 2 "usage: scripts/ci/comment.sh FILE"
file=$1
[[ "$file" == /* ]] || file=$PWD/$file  # relative to where the caller stands
cd_root
exec "$(python_bin)" scripts/ci/pr_comment.py "$file"
