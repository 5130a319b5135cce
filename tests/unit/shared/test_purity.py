"""``shared`` is pure: importing it in a fresh interpreter loads no I/O framework or driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
SHARED_MODULES = ["shared", "shared.protocol", "shared.errors", "shared.ids", "shared.logformat",
                  "shared.fields", "shared.containers", "shared.instructions", "shared.overlay",
                  "shared.discovery", "shared.health"]
FORBIDDEN = ["asyncio", "aiohttp", "websockets", "docker", "psutil", "sqlalchemy"]


def loaded_forbidden(imports: list[str]) -> list[str]:
    """Forbidden packages (or their submodules) in sys.modules after ``imports`` in a new Python."""
    script = (
        "import json, sys\n"
        + "".join(f"import {name}\n" for name in imports)
        + f"forbidden = {FORBIDDEN!r}\n"
        + "print(json.dumps(sorted(m for m in sys.modules\n"
        + "    if any(m == f or m.startswith(f + '.') for f in forbidden))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    found: list[str] = json.loads(result.stdout)
    return found


def test_importing_every_shared_module_pulls_in_no_io_library() -> None:
    assert loaded_forbidden(SHARED_MODULES) == []


def test_the_purity_check_does_see_a_forbidden_import() -> None:
    """Guards the test above against passing vacuously."""
    assert "asyncio" in loaded_forbidden(["shared.protocol", "asyncio"])
