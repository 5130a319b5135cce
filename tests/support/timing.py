"""Test time budgets: every wait is a multiple of one unit, scalable with CORRAL_TEST_TIME_SCALE
on a slow machine. These bound waits; no test asserts how fast anything is."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

UNIT = float(os.environ.get("CORRAL_TEST_TIME_SCALE", "1.0"))
T = TypeVar("T")


def seconds(n: float) -> float:
    return n * UNIT


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + seconds(timeout)
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds(timeout):g} s waiting for {what} "
                         f"(last: {last!r})")
