"""HAProxy's own word on a load balancer's config before it is stored: the balancer rendered as
its agents will render it (``shared.haproxy_config``), custom text merged, checked with
``haproxy -c`` in a private temporary directory, its certificates written there for the
check only.

Where the server's machine has no ``haproxy``, only the merge is checked (the custom text's
sections); an agent that then gets a config its HAProxy refuses keeps the running one and
reports HAProxy's message on the instance.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from shared.haproxy_config import Paths, certificate_file, render
from shared.lb import Balancer
from shared.lb_report import trim_message

CHECK_TIMEOUT = 20.0


def haproxy_binary() -> str | None:
    return os.environ.get("CORRAL_HAPROXY") or shutil.which("haproxy") or \
        next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
              if os.access(p, os.X_OK)), None)


async def haproxy_refusal(balancer: Balancer) -> str | None:
    """Why HAProxy would refuse the balancer's config (its own message), or None. A custom
    text that is not made of sections raises ValueError, naming its line."""
    with tempfile.TemporaryDirectory(prefix="corral-lb-") as directory:
        paths = Paths.under(directory)
        text = render(balancer, paths)
        binary = haproxy_binary()
        if binary is None:
            return None
        for certificate in balancer.certificates:
            path = Path(paths.certs_dir) / certificate_file(balancer, certificate.name)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600)
            path.write_text(certificate.pem)
        config = Path(directory) / "haproxy.cfg"
        config.write_text(text)
        process = await asyncio.create_subprocess_exec(
            binary, "-c", "-f", str(config), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return "haproxy -c did not answer in time"
        if process.returncode == 0:
            return None
        return trim_message(output.decode(errors="replace").replace(directory, ""))

