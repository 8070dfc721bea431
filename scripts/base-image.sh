#!/usr/bin/env bash
# Make (or reuse) a local Debian bookworm base image with Python 3.11 and venv, without pulling from any
# registry: debootstrap a minbase root filesystem on the host and `docker import` it. Used by the container
# test (tests/container/) as the serving image's BASE_IMAGE, where no registry can be reached; a normal
# build keeps the Dockerfile's default (python:3.11-slim-bookworm).
#
# The tag is a content key (suite, package list, mirror, this script), so a second run on the same machine
# finds it with `docker image inspect` and does nothing (about 0.1 s). Prints the image reference on stdout.
# It is also tagged $repo:bookworm-py311 (what Pulumi.local.yaml builds on), moved to the newest build.
#   scripts/base-image.sh            find or build it (`make base-image`: debootstrap reaches Debian's mirror)
#   scripts/base-image.sh --cached   find it, never build: what tests call (they reach no package mirror)
#   BASE_IMAGE_REPO  repository name (default modelstack-base)
#   DEBIAN_MIRROR    debootstrap mirror (default http://deb.debian.org/debian)
# Needs root (debootstrap), a running engine (scripts/start-dockerd.sh) and debootstrap
# (scripts/install-system-deps.sh).
set -euo pipefail

repo=${BASE_IMAGE_REPO:-modelstack-base}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv brings ensurepip (the Dockerfile's builder makes /opt/venv with it); nothing else: no compilers.
packages=python3,python3-venv

self=$(readlink -f "${BASH_SOURCE[0]}")
key=$(printf '%s\n' "$suite" "$packages" "$mirror" | cat - "$self" | sha256sum | cut -c1-12)
ref="$repo:$suite-py311-$key"
alias="$repo:$suite-py311"
found() { docker image inspect "$ref" >/dev/null 2>&1 && docker tag "$ref" "$alias" && echo "$ref"; }

for tool in docker debootstrap; do
    if ! command -v "$tool" >/dev/null && ! [[ -x /usr/sbin/$tool ]]; then
        echo "base-image: $tool is not installed; run scripts/install-system-deps.sh" >&2
        exit 1
    fi
done
PATH=$PATH:/usr/sbin:/sbin

found && exit 0
if [[ ${1:-} == --cached ]]; then
    echo "base-image: $ref is not in the Docker engine; run \`make base-image\`" >&2
    exit 1
fi

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"

# One builder at a time per machine; a second caller waits, then finds the image.
lock=/tmp/modelstack-base-image.lock
exec 9>"$lock"
flock 9
found && exit 0

root=$(mktemp -d /var/tmp/modelstack-base.XXXXXX)
cleanup() { $sudo rm -rf --one-file-system "$root"; }
trap cleanup EXIT

log=$root.log
if ! $sudo debootstrap --variant=minbase --include="$packages" "$suite" "$root/rootfs" "$mirror" >"$log" 2>&1; then
    echo "base-image: debootstrap failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
fi
rm -f "$log"
# Slim it: no package caches or lists (the image never runs apt), no docs or man pages.
$sudo rm -rf "$root/rootfs/var/cache/apt/archives/"*.deb "$root/rootfs/var/lib/apt/lists/"* \
    "$root/rootfs/usr/share/doc/"* "$root/rootfs/usr/share/man/"* "$root/rootfs/usr/share/info/"* \
    "$root/rootfs/var/log/"*.log "$root/rootfs/var/cache/debconf/"*-old

# An imported image has no config: give it what python:3.11-slim has (PATH, LANG, CMD).
$sudo tar -C "$root/rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$packages $suite ($mirror)" \
    - "$ref" >/dev/null
found
