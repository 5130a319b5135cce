#!/usr/bin/env bash
# Install and start Corral on this Debian/Ubuntu machine, from this checkout:
#   sudo scripts/install.sh
# The server runs with its embedded SQLite store in /var/lib/corral-server on port 8080 (a
# systemd unit where systemd runs, else a background process). Where a Docker engine answers,
# this machine is then registered as the first host.
# Env: CORRAL_HOME (/opt/corral), CORRAL_DATA_DIR (/var/lib/corral-server), CORRAL_PORT (8080),
#      CORRAL_PUBLIC_URL (http://<this machine's first address>:8080)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
home=${CORRAL_HOME:-/opt/corral}
data=${CORRAL_DATA_DIR:-/var/lib/corral-server}
port=${CORRAL_PORT:-8080}
log=/var/log/corral-server.log
# The address other hosts reach this one at, for the registration command.
address=$(hostname -I 2>/dev/null | awk '{print $1}')
public_url=${CORRAL_PUBLIC_URL:-http://${address:-127.0.0.1}:$port}
die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo scripts/install.sh)"
command -v python3 >/dev/null || die "python3 (3.11 or newer) is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python 3.11 or newer is required, found $(python3 -V 2>&1)"
if ! python3 -m venv --help >/dev/null 2>&1 || ! command -v curl >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv curl
fi

echo "== installing Corral into $home"
[ -x "$home/bin/pip" ] || python3 -m venv "$home"
"$home/bin/pip" install -q --upgrade pip >/dev/null
"$home/bin/pip" install -q "$here"
ln -sf "$home/bin/corral-server" /usr/local/bin/corral-server
ln -sf "$home/bin/corral-agent" /usr/local/bin/corral-agent

echo "== starting the server on port $port (data in $data)"
if [ -d /run/systemd/system ]; then
    cat >/etc/systemd/system/corral-server.service <<UNIT
[Unit]
Description=Corral server
After=network-online.target

[Service]
ExecStart=$home/bin/corral-server --data-dir $data --port $port --public-url $public_url
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now corral-server >/dev/null
    show_log() { journalctl -u corral-server --no-pager -o cat; }
else
    if [ -s /run/corral-server.pid ] && kill -0 "$(cat /run/corral-server.pid)" 2>/dev/null; then
        echo "(already running as pid $(cat /run/corral-server.pid))"
    else
        nohup "$home/bin/corral-server" --data-dir "$data" --port "$port" \
            --public-url "$public_url" >>"$log" 2>&1 &
        echo $! >/run/corral-server.pid
    fi
    show_log() { cat "$log"; }
fi
for _ in $(seq 1 60); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.5
done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || die "the server did not start; see $log"
# The first start prints the admin keys once; show them here too.
show_log | sed -n '/^Corral is ready/,/^$/p' | tail -n 8

if docker info >/dev/null 2>&1; then
    echo "== registering this machine as a host"
    command=$("$home/bin/corral-server" registration-command --data-dir "$data" \
        --public-url "http://127.0.0.1:$port")
    url=${command##* }
    "$home/bin/corral-agent" "$url" --register-only
    if [ -d /run/systemd/system ]; then
        cat >/etc/systemd/system/corral-agent.service <<UNIT
[Unit]
Description=Corral agent
After=network-online.target docker.service corral-server.service

[Service]
ExecStart=$home/bin/corral-agent
Restart=always
RestartSec=5
# The HAProxy of each load balancer outlives an agent restart: the agent adopts it.
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
        systemctl daemon-reload
        systemctl enable --now corral-agent >/dev/null
    else
        nohup "$home/bin/corral-agent" >>/var/log/corral-agent.log 2>&1 &
        echo $! >/run/corral-agent.pid
    fi
else
    echo "(no Docker engine answers here: register hosts with the command above)"
fi
echo "== Corral runs at $public_url/v1"
