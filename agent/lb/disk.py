"""A balancer's files on the agent's disk: its directory, its sockets (in a short directory
of their own: HAProxy takes a unix socket path of at most 97 bytes, and a state directory may
be deep), its certificates (in a directory named by a digest of them, so that a config
HAProxy refuses never overwrites the ones in use) and the balancer it last applied, which a
restarted agent reads back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from agent.lb.process import Files
from agent.state import write_private
from shared.errors import CorralError
from shared.fields import Fields, invalid_data
from shared.haproxy_config import Paths, certificate_file
from shared.lb import Balancer


def socket_root() -> Path:
    """Where balancers' sockets go: /run where the agent may write there (root), else the
    temporary directory, per user."""
    if os.access("/run", os.W_OK):
        return Path("/run/corral-lb")
    return Path(tempfile.gettempdir()) / f"corral-lb-{os.getuid()}"


def files(base: Path, directory: Path) -> Files:
    """The files of the balancer in ``directory`` of ``base``, its sockets in a directory
    (made here) named by ``base``, so that a restarted agent finds them again."""
    key = hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:10]
    sockets = socket_root() / key / directory.name
    sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Files(directory, sockets)


def paths(files: Files, balancer: Balancer) -> Paths:
    """Where ``balancer``'s config names its files."""
    digest = hashlib.sha256(json.dumps(
        [c.dump() for c in balancer.certificates]).encode()).hexdigest()[:12]
    directory = str(files.directory)
    return Paths(f"{directory}/certs-{digest}", str(files.admin_socket),
                 f"{directory}/servers.state")


def write_certificates(balancer: Balancer, paths: Paths) -> None:
    certs = Path(paths.certs_dir)
    if not balancer.certificates or certs.is_dir():
        return  # named by a digest of its content: there already means complete
    staging = certs.with_name(certs.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for certificate in balancer.certificates:
        target = staging / certificate_file(balancer, certificate.name)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(target, certificate.pem if certificate.pem.endswith("\n")
              else certificate.pem + "\n")
    os.replace(staging, certs)


def remove_old_certificates(files: Files, paths: Paths) -> None:
    keep = Path(paths.certs_dir).name
    for old in files.directory.glob("certs-*"):
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def save_applied(files: Files, balancer: Balancer) -> None:
    if files.directory.is_dir():
        write_private(files.applied, json.dumps(balancer.dump()))


def load_applied(files: Files) -> Balancer | None:
    """The balancer a previous agent applied, or None when it cannot be read."""
    try:
        obj = json.loads(files.applied.read_text())
        return Balancer.read(Fields(obj, "balancer.json", invalid_data))
    except (OSError, ValueError, CorralError):
        return None

