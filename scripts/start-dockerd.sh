#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`; start Debian's dockerd in the background if none does.
# Idempotent and quiet: a running engine (any, e.g. Docker Desktop or a systemd service) is used as is.
# Needs root or sudo to start dockerd. Install it first with scripts/install-system-deps.sh.
#   DOCKERD_LOG   where dockerd's log goes (default /var/log/modelstack-dockerd.log)
#   DOCKERD_WAIT  seconds to wait for the engine to answer (default 60)
# Prints "started" on stdout when it started dockerd itself (the test uses that), nothing otherwise.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/modelstack-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}

docker_ok() { docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null; then
    echo "start-dockerd: no docker CLI on PATH; run scripts/install-system-deps.sh (installs Debian's docker.io)" >&2
    exit 1
fi
if info=$(docker info 2>&1 >/dev/null); then exit 0; fi
if [[ $info == *"permission denied"* ]]; then
    echo "start-dockerd: an engine runs but $(id -un) may not use its socket; join the docker group or use sudo" >&2
    exit 1
fi

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"

# A systemd-managed machine: let systemd own the daemon.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    $sudo systemctl start docker >/dev/null 2>&1 || true
fi

if ! docker_ok; then
    dockerd=$(command -v dockerd || true)
    [[ -z $dockerd && -x /usr/sbin/dockerd ]] && dockerd=/usr/sbin/dockerd
    if [[ -z $dockerd ]]; then
        echo "start-dockerd: dockerd is not installed; run scripts/install-system-deps.sh (installs Debian's docker.io)" >&2
        exit 1
    fi
    # A stale pid file from a dockerd that died keeps the next one from starting.
    pidfile=/var/run/docker.pid
    if [[ -f $pidfile ]] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
        $sudo rm -f "$pidfile"
    fi
    # setsid + nohup: the daemon outlives this script and the test session that ran it.
    $sudo setsid nohup "$dockerd" >>"$log" 2>&1 </dev/null &
    deadline=$(( $(date +%s) + wait_s ))
    until docker_ok; do
        if (( $(date +%s) >= deadline )); then
            echo "start-dockerd: dockerd did not answer within ${wait_s}s; last lines of $log:" >&2
            tail -n 30 "$log" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    echo started
fi
