"""The agent as a wheel, built in memory from this server's own code, so that a new host
installs exactly the agent its server speaks with, from the server itself."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import zipfile
from importlib import metadata
from pathlib import Path

import agent
import shared

DIST = "corral_agent"
REQUIRES = ("websockets>=13,<18", "docker>=7,<8", "psutil>=5.9", "dnslib>=0.9.24")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def wheel_name() -> str:
    return f"{DIST}-{version()}-py3-none-any.whl"


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def _sources() -> list[tuple[str, bytes]]:
    files: list[tuple[str, bytes]] = []
    for package in (agent, shared):
        root = Path(package.__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                files.append((f"{root.name}/{path.relative_to(root).as_posix()}",
                              path.read_bytes()))
    return files


@functools.cache
def build_wheel() -> bytes:
    """The wheel's bytes (deterministic for a given source tree)."""
    info = f"{DIST}-{version()}.dist-info"
    meta = "\n".join([
        "Metadata-Version: 2.1", "Name: corral-agent", f"Version: {version()}",
        "Summary: Corral host agent", "Requires-Python: >=3.11",
        *(f"Requires-Dist: {req}" for req in REQUIRES), "",
    ])
    entries = [
        *_sources(),
        (f"{info}/METADATA", meta.encode()),
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: corral\nRoot-Is-Purelib: true\n"
                          b"Tag: py3-none-any\n"),
        (f"{info}/entry_points.txt", b"[console_scripts]\ncorral-agent = agent.cli:main\n"),
    ]
    record = "".join(f"{name},{_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            item = zipfile.ZipInfo(name, date_time=_EPOCH)
            item.compress_type = zipfile.ZIP_DEFLATED
            item.external_attr = 0o644 << 16
            wheel.writestr(item, data)
    return buffer.getvalue()
