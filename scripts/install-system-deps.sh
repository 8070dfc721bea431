#!/usr/bin/env bash
# System packages the tests use, from Debian (needs root or sudo):
#   prometheus   - prometheus + promtool for the monitoring tests
#   docker.io    - dockerd + docker CLI for the container test (tests/container/; it starts dockerd itself
#                  with scripts/start-dockerd.sh when none runs)
#   debootstrap  - builds the container test's base image offline (scripts/base-image.sh)
#   wrk          - the serving benchmark's load generator (bench/load_generator.py, tested in tests/bench/)
#   docker-registry - the image registry on 127.0.0.1 of `make e2e` (local-cluster/)
#   openssl      - the local cluster's certificates
#   skopeo       - copies an image between registries by digest (artifacts/promote.py; `make e2e`)
#   the shellcheck package - lints scripts/ci/*.sh and the workflows' run: blocks (tests/ci/, through actionlint too)
#   the local cluster's node (local-cluster/): containernetworking-plugins (bridge, host-local, portmap,
#   firewall, loopback), iptables and iproute2 (kube-proxy, the bridge), ipset (kube-router's network
#   policies), gettext-base (envsubst renders
#   the node's files), libseccomp-dev (runc is built with seccomp: Pod Security restricted asks for it)
# Installs only what is missing; a machine that has them does nothing. `make test` runs it first.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

has() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }

missing=()
has promtool && has prometheus || missing+=(prometheus)
# dockerd, not just a docker CLI: some machines carry a client binary without an engine.
has dockerd || missing+=(docker.io)
has debootstrap || missing+=(debootstrap)
has wrk || missing+=(wrk)
has docker-registry || missing+=(docker-registry)
has openssl || missing+=(openssl)
has shellcheck || missing+=(shellcheck)
has skopeo || missing+=(skopeo)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
has iptables || missing+=(iptables)
has ipset || missing+=(ipset)
has ip || missing+=(iproute2)
has envsubst || missing+=(gettext-base)
[[ -f /usr/include/seccomp.h ]] || missing+=(libseccomp-dev)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    elif command -v sudo >/dev/null && [[ -t 0 ]]; then
        sudo="sudo"  # asks for the password
    else
        echo "install-system-deps: missing Debian packages ${missing[*]}; as root run: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages may start their own services; the tests run their own on free ports.
if command -v service >/dev/null; then
    for pkg in prometheus docker-registry; do
        if [[ " ${missing[*]} " == *" $pkg "* ]]; then $sudo service "$pkg" stop >/dev/null 2>&1 || true; fi
    done
fi
