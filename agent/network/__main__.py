"""Apply the overlay by hand or from a test: ``python -m agent.network apply|plan FILE`` or
``python -m agent.network teardown``, inside the host's network namespace.

FILE (``-`` for stdin) is JSON: ``{"underlayIp": "10.99.0.1", "subnet": "10.42.1.0/24",
"underlayDevice": "eth0" (optional), "peers": [{"subnet": "10.42.2.0/24", "underlayIp":
"10.99.0.2"}, ...]}``. Prints the commands run (``plan``: that would run) as a JSON list of
argv lists. The engine is the one DOCKER_HOST (and DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.network.config import OverlayConfig, Peer
from agent.network.errors import OverlayError
from agent.network.overlay import Overlay, SubprocessRunner
from agent.network.plan import Command


def read_description(data: Any) -> tuple[OverlayConfig, list[Peer]]:
    """The settings and peers of a JSON description (see the module docstring)."""
    if not isinstance(data, dict):
        raise ValueError("The overlay description must be a JSON object.")
    config = OverlayConfig.of(str(data.get("underlayIp", "")), str(data.get("subnet", "")),
                              underlay_device=data.get("underlayDevice"))
    peers = [Peer.of(str(p.get("subnet", "")), str(p.get("underlayIp", "")))
             for p in data.get("peers", [])]
    return config, peers


async def _main(args: argparse.Namespace, text: str) -> list[Command]:
    docker_env = {k: v for k, v in os.environ.items() if k.startswith("DOCKER_")}
    overlay = Overlay(SubprocessRunner(docker_env))
    if args.command == "teardown":
        return await overlay.teardown()
    config, peers = read_description(json.loads(text))
    if args.command == "plan":
        return await overlay.pending(config, peers)
    return await overlay.apply(config, peers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.network", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("apply", "plan", "teardown"))
    parser.add_argument("file", nargs="?", default="-")
    args = parser.parse_args(argv)
    try:
        text = ""
        if args.command != "teardown":
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        commands = asyncio.run(_main(args, text))
    except (OverlayError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([list(c) for c in commands]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
