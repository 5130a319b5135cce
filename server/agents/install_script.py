"""The POSIX shell script served at ``/v1/scripts/<token>``: install the agent from this
server into a virtualenv, then run it (a systemd unit where systemd runs, else in the
foreground). Only the first run carries the token; the unit runs from the stored credentials."""

from __future__ import annotations

import shlex

_TEMPLATE = r"""#!/bin/sh
# Corral agent installer. Usage: curl -fsSL {url} | sudo sh
set -eu
CORRAL_URL={url_q}
WHEEL_URL={wheel_q}
PREFIX="${{CORRAL_AGENT_HOME:-/opt/corral-agent}}"
STATE_DIR="${{CORRAL_STATE_DIR:-/var/lib/corral}}"
BIN_DIR="${{CORRAL_BIN_DIR:-/usr/local/bin}}"
die() {{ echo "corral: $*" >&2; exit 1; }}

[ "$(id -u)" = 0 ] || die "run this script as root (curl ... | sudo sh)"
command -v python3 >/dev/null 2>&1 || die "python3 (3.11 or newer) is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is required, found $(python3 -V 2>&1)"
if [ -z "${{DOCKER_HOST:-}}" ] && [ ! -S /var/run/docker.sock ]; then
    die "no Docker engine found at /var/run/docker.sock: install and start Docker first"
fi
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || echo "corral: haproxy is not \
installed: this host runs no load balancer until it is (apt-get install haproxy)" >&2
if [ ! -x "$PREFIX/bin/pip" ]; then
    python3 -m venv "$PREFIX" || die "python3 -m venv failed: install python3-venv"
fi
"$PREFIX/bin/pip" install --quiet --upgrade "$WHEEL_URL" \
    || die "could not install the agent from $WHEEL_URL"
mkdir -p "$BIN_DIR" && ln -sf "$PREFIX/bin/corral-agent" "$BIN_DIR/corral-agent"
# Register now, in the foreground, so that a bad token fails here with its message.
"$PREFIX/bin/corral-agent" "$CORRAL_URL" --state-dir "$STATE_DIR" --register-only
if [ -d /run/systemd/system ] && [ -z "${{CORRAL_NO_SYSTEMD:-}}" ]; then
    cat >/etc/systemd/system/corral-agent.service <<UNIT
[Unit]
Description=Corral agent
After=network-online.target docker.service
Wants=network-online.target

[Service]
ExecStart=$PREFIX/bin/corral-agent --state-dir $STATE_DIR
Restart=always
RestartSec=5
# The HAProxy of each load balancer outlives an agent restart: the agent adopts it.
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now corral-agent >/dev/null
    echo "corral: the agent runs as the systemd unit corral-agent (journalctl -u corral-agent -f)"
else
    echo "corral: no systemd here; running the agent in the foreground"
    exec "$PREFIX/bin/corral-agent" --state-dir "$STATE_DIR"
fi
"""


def install_script(url: str, wheel_url: str) -> str:
    return _TEMPLATE.format(url=url, url_q=shlex.quote(url), wheel_q=shlex.quote(wheel_url))
