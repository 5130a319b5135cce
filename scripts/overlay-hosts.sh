#!/usr/bin/env bash
# Several Docker "hosts" on one underlay, for overlay network tests and bench/network.py:
# a switch namespace ovl-sw with bridge br-underlay (10.99.0.254/24), and namespaces ovl-h1..N,
# each with eth0 = 10.99.0.I/24 on that switch and its own dockerd. The root namespace (where
# this script runs) joins the underlay as SERVER_IP=10.99.0.253 on `ovl-root`, one end of a veth
# pair whose other end (p-root) is a port of br-underlay, so that a Corral server running in the
# root namespace is reached from the hosts (and their agents) at 10.99.0.253: for the root
# namespace that is local delivery (INPUT), never forwarding. No bridge is added to the root
# namespace: one there would meet the root dockerd's FORWARD DROP. Each host starts with
# ip_forward=0, so its dockerd sets FORWARD DROP as on a stock host. Needs root, iproute2,
# util-linux (nsenter), iptables and docker.io.
#
# Usage: scripts/overlay-hosts.sh up N            N = 1-9 hosts; removes leftovers first
#        scripts/overlay-hosts.sh restart-docker I  restart host I's dockerd (same settings)
#        scripts/overlay-hosts.sh down             remove every host and the switch
# `up` prints one line per host:
#   NAME=ovl-h1 NETNS=/var/run/netns/ovl-h1 DOCKER_HOST=unix:///run/corral-ovl-h1.sock IP=10.99.0.1
# and nothing else on stdout; the root namespace's address (SERVER_IP above, fixed) goes to stderr.
# `down` succeeds when everything is already gone, `ovl-root` included.
# Env: CORRAL_TEST_IMAGE  test image loaded into each daemon (see build-test-image.sh)
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "$prog: error: $*" >&2; exit 1; }
usage="usage: $prog up N | $prog restart-docker I | $prog down"
UP_WAIT=30   # seconds for a new dockerd to answer
DOWN_WAIT=20 # seconds for dockerd to exit after SIGTERM before SIGKILL
switch=ovl-sw
root_dev=ovl-root      # the root namespace's end of its veth pair to the switch
SERVER_IP=10.99.0.253  # its address on the underlay

[ $# -ge 1 ] || die "missing command ($usage)"
cmd=$1
case $cmd in
    -h | --help) echo "$usage"; exit 0 ;;
    up | restart-docker)
        [ $# -eq 2 ] && [[ $2 =~ ^[1-9]$ ]] || die "'$cmd' takes a number 1-9 ($usage)" ;;
    down) [ $# -eq 1 ] || die "'down' takes no arguments ($usage)" ;;
    *) die "unknown command '$cmd' ($usage)" ;;
esac
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, dockerd)"
for c in ip nsenter dockerd docker iptables; do
    command -v "$c" >/dev/null || die "'$c' not found (apt-get install iproute2 iptables docker.io)"
done

# Per-host names and paths (absolute: a relative exec-root makes containerd time out).
host_vars() {
    name=ovl-h$1
    netns=/var/run/netns/$name
    data_root=/var/lib/corral-$name
    exec_root=/run/corral-$name
    sock=unix:///run/corral-$name.sock
    pidfile=/run/corral-$name.pid
    config=/run/corral-$name.json
    log=/var/log/dockerd-corral-$name.log
    cgroup=corral-$name
}

# shellcheck source=lib/dockerd-leftovers.sh
. "$here/lib/dockerd-leftovers.sh"

daemon_pid() { # the pid of this host's dockerd if it is alive (never a recycled pid)
    local pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cmdline "$pid") == dockerd*" --exec-root $exec_root "* ]] && echo "$pid"
}

stop_daemon() {
    local pid i
    pid=$(daemon_pid) || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $((DOWN_WAIT * 10))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "$prog: dockerd $pid did not exit within $DOWN_WAIT s, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

start_daemon() { # starts this host's dockerd and waits until it answers
    local pid i
    mkdir -p "$data_root" "$exec_root"
    echo '{}' >"$config"
    # nsenter --net, NOT `ip netns exec` (which remounts /sys: "Devices cgroup isn't mounted").
    # Own containerd namespaces and cgroup parent keep it apart from the main daemon; setsid
    # and closed fds: the daemon outlives this script.
    setsid nsenter --net="$netns" dockerd --config-file "$config" \
        --data-root "$data_root" --exec-root "$exec_root" -H "$sock" --pidfile "$pidfile" \
        --bip "172.$((20 + ${name#ovl-h})).0.1/16" --cgroup-parent "$cgroup" \
        --containerd-namespace "corral-$name" --containerd-plugins-namespace "corral-$name-plugins" \
        </dev/null >>"$log" 2>&1 &
    pid=$!
    for i in $(seq 1 $((UP_WAIT * 5))); do
        docker -H "$sock" version >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$prog: error: dockerd for $name exited during start-up; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    die "dockerd for $name did not answer within $UP_WAIT s (see $log)"
}

host_down() { # every step tolerates "already gone"
    local i f m
    host_vars "$1"
    # Remove containers first: dockerd's shutdown would wait 10 s for each one ignoring SIGTERM.
    if timeout 5 docker -H "$sock" version >/dev/null 2>&1; then
        timeout 15 docker -H "$sock" ps -aq 2>/dev/null | xargs -r timeout 15 docker -H "$sock" rm -f \
            >/dev/null 2>&1 || true
    fi
    stop_daemon
    clear_daemon_leftovers "$exec_root" "$cgroup" "$data_root"
    [ -e "$netns" ] && { ip netns del "$name" 2>/dev/null || true; }
    rm -rf "$data_root" "$exec_root" "/run/corral-$name.sock" "$pidfile" "$config"
    local left=
    daemon_pid >/dev/null && left="$left dockerd"
    [ -e "$netns" ] && left="$left netns:$name"
    [ -e "$data_root" ] && left="$left $data_root"
    [ -z "$left" ] || die "could not remove:$left"
}

down() {
    local i pid pids=() failed=0
    # In parallel: each dockerd takes seconds to shut down.
    for i in 1 2 3 4 5 6 7 8 9; do
        host_vars "$i"
        if [ -e "$netns" ] || [ -e "$data_root" ] || [ -e "$pidfile" ]; then
            host_down "$i" &
            pids+=($!)
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "could not remove every host (see above)"
    # Deleted by name first: the kernel destroys a deleted namespace (and the veth pairs with an
    # end in it) asynchronously, and never while something still holds it open.
    if ip link show "$root_dev" >/dev/null 2>&1; then ip link del "$root_dev" 2>/dev/null || true; fi
    # Deleting the switch namespace deletes the switch ends of every veth pair.
    [ -e "/var/run/netns/$switch" ] && { ip netns del "$switch" 2>/dev/null || true; }
    [ ! -e "/var/run/netns/$switch" ] || die "could not remove netns:$switch"
    ! ip link show "$root_dev" >/dev/null 2>&1 || die "could not remove link:$root_dev"
}

up() {
    local n=$1 i start=$SECONDS
    down
    trap 'on_exit $?' EXIT
    ip netns add "$switch"
    ip -n "$switch" link add br-underlay type bridge
    ip -n "$switch" addr add 10.99.0.254/24 dev br-underlay
    ip -n "$switch" link set br-underlay up
    ip -n "$switch" link set lo up
    # The root namespace on the underlay. Made inside the switch namespace, then one end moved
    # into the namespace of this shell ($$), so that no stray "p-root" ever appears there.
    ip -n "$switch" link add p-root type veth peer name "$root_dev"
    ip -n "$switch" link set "$root_dev" netns "$$"
    ip -n "$switch" link set p-root master br-underlay up
    ip addr add "$SERVER_IP/24" dev "$root_dev"
    ip link set "$root_dev" up
    for i in $(seq 1 "$n"); do
        host_vars "$i"
        ip netns add "$name"
        # Made inside the namespaces, so that neither end ever appears in the root namespace.
        ip -n "$switch" link add "p-$name" type veth peer name eth0 netns "$name"
        ip -n "$switch" link set "p-$name" master br-underlay up
        ip -n "$name" addr add "10.99.0.$i/24" dev eth0
        ip -n "$name" link set eth0 up
        ip -n "$name" link set lo up
        # A new namespace inherits ip_forward=1; a stock host has 0, so Docker sets FORWARD DROP.
        nsenter --net="$netns" sh -c 'echo 0 >/proc/sys/net/ipv4/ip_forward'
        start_daemon
        "$here/build-test-image.sh" "$sock" >&2
    done
    trap - EXIT
    echo "$prog: $n host(s) up in $((SECONDS - start)) s; the root namespace is" \
        "SERVER_IP=$SERVER_IP on $root_dev" >&2
    for i in $(seq 1 "$n"); do
        host_vars "$i"
        echo "NAME=$name NETNS=$netns DOCKER_HOST=$sock IP=10.99.0.$i"
    done
}

restart_docker() {
    host_vars "$1"
    [ -e "$netns" ] || die "host $name is not up"
    stop_daemon
    start_daemon
}

on_exit() {
    [ "$1" -ne 0 ] || return 0
    echo "$prog: 'up' failed, removing what it made" >&2
    down || true
}

case $cmd in
    up) up "$2" ;;
    restart-docker) restart_docker "$2" ;;
    down) down ;;
esac
