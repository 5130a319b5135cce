# Sourced by the test-host scripts: what a killed test dockerd leaves behind, cleared.
# shellcheck shell=bash

cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# clear_daemon_leftovers EXEC_ROOT CGROUP DATA_ROOT
# After a SIGKILL (or a crash) dockerd's own containerd, its shims and the containers survive.
# They are found by the daemon's exec root and cgroup parent, never by a broad process name.
# Its mounts (overlay2 layers, shm, network namespaces) would make rm -rf fail with EBUSY.
clear_daemon_leftovers() {
    local exec_root=$1 cgroup=$2 data_root=$3 f i
    for f in /proc/[0-9]*; do
        i=${f#/proc/}
        case $(cat "$f/comm" 2>/dev/null) in containerd | containerd-shim*) ;; *) continue ;; esac
        if [[ $(cmdline "$i") == *" $exec_root/containerd/"* ]]; then
            kill -KILL "$i" 2>/dev/null || true
        fi
    done
    # shellcheck disable=SC2038 # xargs reads pids (the contents of cgroup.procs), not file names
    find /sys/fs/cgroup -path "*/$cgroup/*" -name cgroup.procs -exec cat {} + 2>/dev/null |
        xargs -r kill -KILL 2>/dev/null || true
    # Remove the (now empty) cgroups, deepest first.
    find /sys/fs/cgroup -depth -type d \( -path "*/$cgroup" -o -path "*/$cgroup/*" \) \
        -exec rmdir {} \; 2>/dev/null || true
    # Unmount deepest first.
    awk -v a="$data_root" -v b="$exec_root" \
        '$5 == a || $5 == b || index($5, a "/") == 1 || index($5, b "/") == 1 {print $5}' \
        /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
