#!/usr/bin/env bash
# System packages the tests use, from Debian (needs root or sudo):
#   prometheus  - prometheus + promtool for the monitoring tests
# Installs only what is missing; a machine that has them does nothing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The package may start its own service; tests run their own Prometheus on a free port.
if command -v service >/dev/null; then $sudo service prometheus stop >/dev/null 2>&1 || true; fi
