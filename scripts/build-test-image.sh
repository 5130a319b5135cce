#!/usr/bin/env bash
# Build the tiny test image (a static busybox, ~2 MB) with `docker import`: no registry is reachable
# from the test machines, so nothing can be pulled.
#
# Usage: scripts/build-test-image.sh [DOCKER_HOST_URL]
#   Without an argument: make sure the image is on the default daemon (DOCKER_HOST or
#   /var/run/docker.sock); does nothing if it is already there (and was built from this recipe:
#   the image carries a label with a hash of it, so changing the recipe rebuilds).
#   With e.g. unix:///run/docker-h2.sock: also make sure it is on that daemon, copying it from the
#   default daemon with `docker save | docker load`.
# Env:   CORRAL_TEST_IMAGE  image name (default corral-test/busybox:latest)
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 1; }
usage="usage: $prog [DOCKER_HOST_URL]"

case ${1:-} in -h | --help) echo "$usage"; exit 0 ;; esac
[ $# -le 1 ] || die "too many arguments ($usage)"
target=${1:-}
case $target in '' | *://?*) ;; *) die "'$target' is not a Docker host URL like unix:///run/docker-h2.sock" ;; esac

image=${CORRAL_TEST_IMAGE:-corral-test/busybox:latest}
busybox=/bin/busybox
# `timeout` because busybox 1.35's `wget -T` segfaults: use `timeout 5 wget ...` in tests.
applets="sh ls cat echo sleep httpd wget nc hostname ip ping nslookup env ps kill mkdir rm touch true
false id date head tail grep sed vi top uname mount df free timeout"
passwd='root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false'
group='root:x:0:
nogroup:x:65534:'
# Identifies this recipe; bump the v1 when changing build() in a way the lists above do not show.
recipe=$(printf 'v1 %s %s %s' "$applets" "$passwd" "$group" | sha256sum | cut -c1-16)

command -v docker >/dev/null || die "no 'docker' client on PATH (apt-get install docker.io)"

# dk [URL] ARGS...: docker on the default daemon (URL empty) or on URL.
dk() { local h=$1; shift; if [ -n "$h" ]; then docker -H "$h" "$@"; else docker "$@"; fi; }
answers() { dk "$1" version >/dev/null 2>&1 || die "no Docker engine answers at ${1:-${DOCKER_HOST:-the default socket}} (try scripts/start-dockerd.sh)"; }
image_id() { dk "$1" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true; }
# Drop the image a rebuild/reload untagged (kept if a container still uses it).
drop_old() { [ -z "$2" ] || [ "$2" = "$(image_id "$1")" ] || dk "$1" image rm "$2" >/dev/null 2>&1 || true; }
has_image() {
    [ "$(dk "$1" image inspect -f '{{index .Config.Labels "corral.test-image"}}' "$image" 2>/dev/null)" = "$recipe" ]
}

build() {
    # Debian's busybox-static gives one static binary; the dynamic 'busybox' package would not run
    # in an empty image (checked below by running it).
    [ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"
    local a
    root=$(mktemp -d) # global: the EXIT trap runs after this function has returned
    trap 'rm -rf "$root"' EXIT
    # mktemp makes a 0700 directory, which would become the image's / and lock out non-root users.
    chmod 0755 "$root"
    mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp" "$root/var/www"
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    # The list is read once: `busybox --list | grep -q` fails under pipefail whenever grep exits
    # before busybox has written everything (SIGPIPE).
    local list
    list=$("$busybox" --list)
    for a in $applets; do
        grep -qx "$a" <<<"$list" || die "$busybox has no '$a' applet"
        ln -s busybox "$root/bin/$a"
    done
    # So that `id`, `ps` and `--user nobody` resolve names.
    printf '%s\n' "$passwd" >"$root/etc/passwd"
    printf '%s\n' "$group" >"$root/etc/group"
    # A reproducible tarball gives the same layer digest on every machine and every run.
    tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -c . |
        docker import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' -c "LABEL corral.test-image=$recipe" \
            -m "corral test image (busybox-static)" - "$image" >/dev/null
    if ! out=$(docker run --rm "$image" echo ok 2>&1) || [ "$out" != ok ]; then
        docker image rm "$image" >/dev/null 2>&1 || true
        die "the new image does not run ($out); is $busybox statically linked?"
    fi
    echo "$prog: built $image"
}

# Parallel runs (several test hosts coming up at once) must not build twice. Only short-lived
# docker clients run while the lock is held, so no daemon can inherit it.
exec 9>"${TMPDIR:-/tmp}/corral-build-test-image.lock"
flock -w 120 9 || die "another build of the test image holds the lock for more than 120 s"

answers ""
if ! has_image ""; then
    old=$(image_id "")
    build
    drop_old "" "$old"
fi

if [ -n "$target" ]; then
    answers "$target"
    if ! has_image "$target"; then
        old=$(image_id "$target")
        docker save "$image" | docker -H "$target" load >/dev/null
        has_image "$target" || die "loading $image into $target failed"
        drop_old "$target" "$old"
        echo "$prog: loaded $image into $target"
    fi
fi
