#!/usr/bin/env bash
# docker/dockerd.sh start|stop|status|env: the project's own Docker daemon.
#
# Its state lives under the build cache ($PYISOLATE_CACHE, else ~/.cache/pyisolate):
# docker/daemon/{data,exec,run}, with its own socket, so it never touches (nor needs) a
# system daemon. No bridge and no iptables rules: containers get `--network none` or
# `--network host` only. `start` is idempotent (an already running daemon of ours is
# reused) and waits until the API answers; `stop` ends the daemon it finds in the pidfile
# (TERM, then KILL after 20 s) and its containers with it. `env` prints the DOCKER_HOST
# line for `export "$(docker/dockerd.sh env)"`. The docker CLI used is /usr/bin/docker
# (Debian's docker.io, which has dockerd); $DOCKER overrides it.
set -euo pipefail
cache=${PYISOLATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pyisolate}
base="$cache/docker/daemon"
run="$base/run"
pidfile="$run/dockerd.pid"
socket="$run/docker.sock"
log="$run/dockerd.log"
docker=${DOCKER:-/usr/bin/docker}
export DOCKER_HOST="unix://$socket"

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

answers() {
    "$docker" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

case "${1:-}" in
start)
    if running && answers; then
        echo "dockerd: already running (pid $(cat "$pidfile"), $DOCKER_HOST)"
        exit 0
    fi
    command -v dockerd >/dev/null || {
        echo "dockerd: not installed (apt-get install docker.io; nox -s docker does it)" >&2
        exit 1
    }
    running && kill "$(cat "$pidfile")" 2>/dev/null # a daemon that stopped answering
    mkdir -p "$base/data" "$base/exec" "$run"
    rm -f "$socket"
    # setsid: the daemon outlives this script and is not in the caller's process group.
    setsid dockerd \
        --host "$DOCKER_HOST" \
        --data-root "$base/data" \
        --exec-root "$base/exec" \
        --pidfile "$pidfile" \
        --bridge none --iptables=false --ip-masq=false --ip6tables=false \
        --cgroup-parent pyisolate-docker \
        --storage-driver overlay2 \
        >"$log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        if answers; then
            echo "dockerd: started (pid $(cat "$pidfile"), $DOCKER_HOST, log $log)"
            exit 0
        fi
        if ! kill -0 $! 2>/dev/null; then
            echo "dockerd: exited during start; last lines of $log:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "dockerd: no answer on $socket after 60 s; last lines of $log:" >&2
    tail -20 "$log" >&2
    exit 1
    ;;
stop)
    if ! running; then
        echo "dockerd: not running"
        rm -f "$pidfile"
        exit 0
    fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || {
            echo "dockerd: stopped (pid $pid)"
            exit 0
        }
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile" "$socket"
    echo "dockerd: killed (pid $pid did not stop within 20 s)"
    ;;
status)
    if running && answers; then
        echo "dockerd: running (pid $(cat "$pidfile"), $DOCKER_HOST)"
    else
        echo "dockerd: not running"
        exit 3
    fi
    ;;
env)
    echo "DOCKER_HOST=$DOCKER_HOST"
    ;;
*)
    echo "usage: docker/dockerd.sh start|stop|status|env" >&2
    exit 2
    ;;
esac
