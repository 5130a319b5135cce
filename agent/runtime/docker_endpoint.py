"""Where the Docker engine listens, as a raw connection reaches it: DOCKER_HOST (and its TLS
settings) read the way docker-py reads them, for the host's Docker socket relay."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import docker.errors
import docker.utils

from agent.runtime.docker_errors import redact
from agent.runtime.interface import EngineEndpoint, RuntimeUnavailable


def engine_endpoint(base_url: str, tls: Any) -> EngineEndpoint:
    """The endpoint of ``base_url`` (a DOCKER_HOST value) with docker-py's ``TLSConfig``
    ``tls`` (or None); RuntimeUnavailable for an engine reached through ssh or a named pipe,
    which only docker-py itself can speak to."""
    address = redact(base_url)
    try:
        url = docker.utils.parse_host(base_url, False, tls=tls is not None)
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailable(f"DOCKER_HOST {address} is not usable: {exc}.") from exc
    parts = urlsplit(url)
    if parts.scheme == "http+unix":
        return EngineEndpoint(address=address, path=url[len("http+unix://"):])
    if parts.scheme in ("http", "https") and parts.hostname and parts.port:
        return EngineEndpoint(address=address, host=parts.hostname, port=parts.port,
                              tls=_client_tls(tls) if parts.scheme == "https" else None)
    raise RuntimeUnavailable(f"the Docker engine at {address} is not on a unix socket or TCP: "
                             "its socket cannot be relayed.")


def _client_tls(tls: Any) -> ssl.SSLContext:
    """docker-py's TLS settings as an SSL context: its CA and client certificate, and no
    verification when DOCKER_TLS_VERIFY is unset (as docker-py does). An https DOCKER_HOST
    without TLS settings is verified against the system's CAs, as requests would."""
    if tls is None:
        return ssl.create_default_context()
    verify = bool(tls.verify)
    context = ssl.create_default_context(cafile=tls.ca_cert if verify else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert:
        try:
            context.load_cert_chain(*tls.cert)
        except (OSError, ssl.SSLError) as exc:
            raise RuntimeUnavailable(f"the Docker client certificate could not be loaded: "
                                     f"{exc}.") from exc
    return context
