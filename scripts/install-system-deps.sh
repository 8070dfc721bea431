#!/usr/bin/env bash
# System packages the tests use, from Debian (needs root or sudo):
#   prometheus   - prometheus + promtool for the monitoring tests
#   docker.io    - dockerd + docker CLI for the container test (tests/container/; it starts dockerd itself
#                  with scripts/start-dockerd.sh when none runs)
#   debootstrap  - builds the container test's base image offline (scripts/base-image.sh)
#   wrk          - the serving benchmark's load generator (bench/load_generator.py, tested in tests/bench/)
# Installs only what is missing; a machine that has them does nothing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

has() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }

missing=()
has promtool && has prometheus || missing+=(prometheus)
# dockerd, not just a docker CLI: some machines carry a client binary without an engine.
has dockerd || missing+=(docker.io)
has debootstrap || missing+=(debootstrap)
has wrk || missing+=(wrk)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package may start its own service; tests run their own Prometheus on a free port.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v service >/dev/null; then
    $sudo service prometheus stop >/dev/null 2>&1 || true
fi
