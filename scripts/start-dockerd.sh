#!/usr/bin/env bash
# Make sure the default Docker engine answers; start dockerd in the background if it does not.
# There is no init system on the test/CI machines, so the docker.io package cannot start it.
#
# Usage: scripts/start-dockerd.sh
# Env:   DOCKERD_LOG  log file of a dockerd started here (default /var/log/dockerd.log)
#        DOCKERD_WAIT seconds to wait for it to answer (default 60)
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 1; }

[ $# -eq 0 ] || die "takes no arguments (usage: $prog)"

log=${DOCKERD_LOG:-/var/log/dockerd.log}
wait_s=${DOCKERD_WAIT:-60}
case $wait_s in '' | *[!0-9]*) die "DOCKERD_WAIT must be a number of seconds, got '$wait_s'" ;; esac

command -v docker >/dev/null || die "no 'docker' client on PATH (apt-get install docker.io)"

answers() { docker info >/dev/null 2>&1; }

if answers; then
    echo "$prog: Docker engine already answers"
    exit 0
fi

# This script only knows how to start the default daemon; waiting for another one is pointless.
case ${DOCKER_HOST:-} in
    '' | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer, and only the default daemon can be started here" ;;
esac

command -v dockerd >/dev/null || die "no 'dockerd' on PATH (apt-get install docker.io)"
[ "$(id -u)" -eq 0 ] || die "docker info fails and only root can start dockerd (or: join the docker group)"

# A dockerd that is still starting (e.g. started by a parallel run) owns the pid file: just wait.
pid=
if [ -s /var/run/docker.pid ]; then
    pid=$(cat /var/run/docker.pid)
    if ! { kill -0 "$pid" 2>/dev/null && grep -qa dockerd "/proc/$pid/cmdline"; }; then
        pid=
    fi
fi
if [ -z "$pid" ]; then
    echo "$prog: starting dockerd (log: $log)"
    # setsid + no inherited fds: the daemon must outlive this script and must not keep the
    # caller's terminal or CI log pipe open.
    setsid dockerd </dev/null >>"$log" 2>&1 &
    pid=$!
fi

for _ in $(seq 1 "$wait_s"); do
    if answers; then
        echo "$prog: Docker engine answers (dockerd pid $pid)"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$prog: error: dockerd exited during start-up; last lines of $log:" >&2
        tail -n 20 "$log" >&2 || true
        exit 1
    fi
    sleep 1
done
echo "$prog: error: dockerd did not answer within $wait_s s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
