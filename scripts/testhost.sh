#!/usr/bin/env bash
# A second Docker "host" on this machine, for multi-host tests: a network namespace with its own
# address and its own dockerd. Needs root, iproute2, util-linux (nsenter) and docker.io.
#
# Usage: scripts/testhost.sh up NAME INDEX
#        scripts/testhost.sh down NAME
#   NAME   1-10 chars [a-z0-9-] (interface names veth-NAME / eth0-NAME must fit in 15 chars)
#   INDEX  0-155: host side 10.99.INDEX.1/24 (veth-NAME), namespace 10.99.INDEX.2/24 (eth0-NAME),
#          container bridge 10.(100+INDEX).0.1/16 (cannot collide with docker0's 172.17/16)
# `up` removes leftovers of an earlier NAME first, and on success prints one line:
#   DOCKER_HOST=unix:///run/docker-NAME.sock IP=10.99.INDEX.2
# `down` succeeds when everything is already gone.
# Env: CORRAL_TEST_IMAGE  test image loaded into the new daemon (see build-test-image.sh)
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "$prog: error: $*" >&2; exit 1; }
usage="usage: $prog up NAME INDEX | $prog down NAME"
UP_WAIT=30   # seconds for the new dockerd to answer
DOWN_WAIT=20 # seconds for dockerd to exit after SIGTERM before SIGKILL

# ---------------------------------------------------------------------------------------------
# arguments

[ $# -ge 1 ] || die "missing command ($usage)"
cmd=$1
case $cmd in
    -h | --help) echo "$usage"; exit 0 ;;
    up) [ $# -eq 3 ] || die "'up' takes NAME INDEX ($usage)" ;;
    down) [ $# -eq 2 ] || die "'down' takes NAME ($usage)" ;;
    *) die "unknown command '$cmd' ($usage)" ;;
esac
name=$2
[[ $name =~ ^[a-z0-9][a-z0-9-]{0,9}$ ]] || die "NAME must be 1-10 characters [a-z0-9-], got '$name'"
if [ "$cmd" = up ]; then
    index=$3
    if ! [[ $index =~ ^(0|[1-9][0-9]{0,2})$ ]] || [ "$index" -gt 155 ]; then
        die "INDEX must be a number 0-155, got '$index'"
    fi
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, dockerd)"
for c in ip nsenter dockerd docker iptables; do
    command -v "$c" >/dev/null || die "'$c' not found (apt-get install iproute2 docker.io)"
done

netns=/var/run/netns/$name
veth=veth-$name    # host side
peer=eth0-$name    # namespace side
data_root=/var/lib/docker-$name
exec_root=/run/docker-$name
sock=unix:///run/docker-$name.sock
pidfile=/run/docker-$name.pid
log=/var/log/dockerd-$name.log
cgroup=docker-$name # cgroup parent of this daemon's containers, separate from the main daemon's
fwd_comment="corral-testhost-$name"

# ---------------------------------------------------------------------------------------------
# down: every step tolerates "already gone"

# shellcheck source=lib/dockerd-leftovers.sh
. "$here/lib/dockerd-leftovers.sh"

daemon_pid() { # prints the pid of this NAME's dockerd if it is alive
    local pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must be a dockerd using our exec root.
    [[ $(cmdline "$pid") == dockerd*" --exec-root $exec_root "* ]] && echo "$pid"
}

down() {
    local pid i f m

    # Remove the running containers first (SIGKILL; removed, so no restart policy brings them
    # back): otherwise dockerd's shutdown waits 10 s for each one that ignores SIGTERM (e.g.
    # `sleep` as pid 1).
    if timeout 5 docker -H "$sock" version >/dev/null 2>&1; then
        timeout 15 docker -H "$sock" ps -q 2>/dev/null | xargs -r timeout 15 docker -H "$sock" rm -f \
            >/dev/null 2>&1 || true
    fi

    if pid=$(daemon_pid); then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 $((DOWN_WAIT * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$prog: dockerd $pid did not exit within $DOWN_WAIT s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi

    clear_daemon_leftovers "$exec_root" "$cgroup" "$data_root"

    [ -e "$netns" ] && { ip netns del "$name" 2>/dev/null || true; }
    # Deleting the namespace deletes the pair; this covers a half-made one left in the host.
    ip link show "$veth" >/dev/null 2>&1 && { ip link del "$veth" 2>/dev/null || true; }
    while iptables -w -D FORWARD -i "$veth" -m comment --comment "$fwd_comment" -j ACCEPT 2>/dev/null; do :; done
    while iptables -w -D FORWARD -o "$veth" -m comment --comment "$fwd_comment" -j ACCEPT 2>/dev/null; do :; done

    rm -rf "$data_root" "$exec_root" "/run/docker-$name.sock" "$pidfile"

    # Report (and fail on) anything that is still there.
    local left=
    daemon_pid >/dev/null && left="$left dockerd"
    [ -e "$netns" ] && left="$left netns:$name"
    ip link show "$veth" >/dev/null 2>&1 && left="$left link:$veth"
    [ -e "$data_root" ] && left="$left $data_root"
    [ -e "$exec_root" ] && left="$left $exec_root"
    [ -z "$left" ] || die "could not remove:$left"
}

# ---------------------------------------------------------------------------------------------
# up

up() {
    local host_ip=10.99.$index.1 ns_ip=10.99.$index.2 bip=10.$((100 + index)).0.1/16
    local start=$SECONDS i used
    pid=

    down
    # From here on, a failure removes what was made (the daemon's log is kept).
    trap 'on_exit $?' EXIT

    # Another test host with the same INDEX would give two routes to one subnet.
    used=$(ip -o addr show to "10.99.$index.0/24" | awk '{print $2}' | head -n 1)
    [ -z "$used" ] || die "10.99.$index.0/24 is already used by interface $used (INDEX taken?)"

    ip netns add "$name"
    ip link add "$veth" type veth peer name "$peer"
    ip link set "$peer" netns "$name"
    ip addr add "$host_ip/24" dev "$veth"
    ip link set "$veth" up
    # `ip -n` only switches the network namespace (unlike `ip netns exec`, no /sys remount).
    ip -n "$name" addr add "$ns_ip/24" dev "$peer"
    ip -n "$name" link set "$peer" up
    ip -n "$name" link set lo up
    ip -n "$name" route add default via "$host_ip"

    # The host routes between test hosts (h2 <-> h3). The main dockerd sets the FORWARD policy
    # to DROP, so accept our veth explicitly (rules are tagged and removed by `down`).
    echo 1 >/proc/sys/net/ipv4/ip_forward
    iptables -w -I FORWARD 1 -i "$veth" -m comment --comment "$fwd_comment" -j ACCEPT
    iptables -w -I FORWARD 1 -o "$veth" -m comment --comment "$fwd_comment" -j ACCEPT

    mkdir -p "$data_root" "$exec_root"
    # nsenter --net, NOT `ip netns exec`: the latter remounts /sys and dockerd then fails with
    # "Devices cgroup isn't mounted". Without --containerd, dockerd runs its own containerd with
    # socket and state under --exec-root/--data-root, so it cannot meet the main one; the separate
    # containerd namespace also keeps them apart should a system containerd at
    # /run/containerd/containerd.sock exist (dockerd would then share it). setsid and closed fds:
    # the daemon outlives this script and must not hold the caller's terminal or pipes.
    setsid nsenter --net="$netns" dockerd \
        --data-root "$data_root" --exec-root "$exec_root" \
        -H "$sock" --pidfile "$pidfile" --bip "$bip" \
        --cgroup-parent "$cgroup" \
        --containerd-namespace "corral-$name" --containerd-plugins-namespace "corral-$name-plugins" \
        </dev/null >"$log" 2>&1 &
    pid=$!

    for i in $(seq 1 $((UP_WAIT * 5))); do
        docker -H "$sock" version >/dev/null 2>&1 && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$prog: error: dockerd for $name exited during start-up; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        [ "$i" -lt $((UP_WAIT * 5)) ] || die "dockerd for $name did not answer within $UP_WAIT s (see $log)"
        sleep 0.2
    done

    "$here/build-test-image.sh" "$sock" >&2

    trap - EXIT
    echo "$prog: $name up in $((SECONDS - start)) s" >&2
    echo "DOCKER_HOST=$sock IP=$ns_ip"
}

on_exit() {
    [ "$1" -ne 0 ] || return 0
    echo "$prog: 'up $name' failed, removing what it made (log: $log)" >&2
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    down || true
}

"$cmd"
