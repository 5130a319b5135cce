"""Container commands for end-to-end tests."""

from __future__ import annotations


def stops_on_term(script: str) -> list[str]:
    """``sh -c script`` with its last command in the background, so that the shell, the
    container's pid 1, exits on SIGTERM. Pid 1 ignores the signals it has no handler for, and
    busybox's httpd and sleep install none: Docker's stop would wait its 10 s for nothing on
    every scale-down, upgrade, recreation and removal before its SIGKILL."""
    return ["sh", "-c", f"trap 'exit 0' TERM; {script} & wait"]
