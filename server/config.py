"""Server settings, read once at the edge (CLI flags and environment) into a frozen dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.api.client_headers import Network, parse_networks
from server.security import Secret
from server.store.urls import engine_url

DEFAULT_DATA_DIR = Path("/var/lib/corral-server")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    # Base URL agents and users reach the server at; derived from the bind address if unset.
    public_url: str | None = None
    admin_access_key: str | None = None
    admin_secret_key: Secret | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    ping_interval: float = 5.0
    disconnect_grace: float = 15.0
    # A disconnected host's service containers are replaced elsewhere only once it has been
    # away this long (CORRAL_HOST_LOST_TIMEOUT, seconds): short blips must not kill them.
    host_lost_timeout: float = 300.0
    report_interval: float = 60.0
    hello_timeout: float = 10.0
    instruction_timeout: float = 45.0
    max_body_bytes: int = 1024 * 1024
    # The change log keeps at least this many entries (and every one younger than 10 min).
    change_log_keep: int = 100_000
    # A connection must send a complete request head within this many seconds of opening or
    # of its previous response, or it is closed (CORRAL_HEADER_TIMEOUT); idle keep-alive
    # connections are closed after it too.
    header_timeout: float = 10.0
    # Longest request line (CORRAL_MAX_REQUEST_LINE) and header field (CORRAL_MAX_HEADER_FIELD)
    # taken, in bytes; Rancher took about 16 KiB. Longer ones get 414 and 431.
    max_request_line_bytes: int = 32 * 1024
    max_header_field_bytes: int = 20 * 1024
    # Proxies whose X-Forwarded-For names the client (CORRAL_TRUSTED_PROXIES); none by default.
    trusted_proxies: tuple[Network, ...] = ()
    # Failed authentications a client address may make at once, then this many per second;
    # beyond that it gets 429 (server/api/throttle.py). Failures are summed up in the log
    # once per interval per address.
    auth_failure_burst: int = 20
    auth_failure_rate: float = 1.0
    auth_log_interval: float = 60.0

    @classmethod
    def from_sources(cls, flags: Mapping[str, object], environ: Mapping[str, str]) -> Settings:
        """Flags win over environment variables, which win over defaults."""

        def pick(flag: str, env: str, default: object) -> object:
            value = flags.get(flag)
            if value is not None:
                return value
            return environ.get(env, default)

        access = environ.get("CORRAL_ADMIN_ACCESS_KEY") or None
        secret = environ.get("CORRAL_ADMIN_SECRET_KEY") or None
        if (access is None) != (secret is None):
            raise ValueError("set both CORRAL_ADMIN_ACCESS_KEY and CORRAL_ADMIN_SECRET_KEY, "
                             "or neither")
        try:
            port = int(str(pick("port", "CORRAL_PORT", 8080)))
            ping = float(str(pick("ping_interval", "CORRAL_PING_INTERVAL", 5.0)))
            grace = float(str(pick("disconnect_grace", "CORRAL_DISCONNECT_GRACE", 15.0)))
            lost = float(str(pick("host_lost_timeout", "CORRAL_HOST_LOST_TIMEOUT", 300.0)))
            burst = int(str(pick("auth_failure_burst", "CORRAL_AUTH_FAILURE_BURST", 20)))
            rate = float(str(pick("auth_failure_rate", "CORRAL_AUTH_FAILURE_RATE", 1.0)))
            log_interval = float(str(pick("auth_log_interval", "CORRAL_AUTH_LOG_INTERVAL",
                                          60.0)))
            header_timeout = float(str(pick("header_timeout", "CORRAL_HEADER_TIMEOUT", 10.0)))
            max_line = int(str(pick("max_request_line_bytes", "CORRAL_MAX_REQUEST_LINE",
                                    32 * 1024)))
            max_field = int(str(pick("max_header_field_bytes", "CORRAL_MAX_HEADER_FIELD",
                                     20 * 1024)))
        except ValueError as exc:
            raise ValueError(f"bad number in settings: {exc}") from None
        if header_timeout <= 0 or max_line < 1024 or max_field < 1024:
            raise ValueError("the header timeout must be positive and the request line and "
                             "header field limits at least 1024 bytes")
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        if lost <= 0:
            raise ValueError("the host lost timeout must be positive")
        if ping <= 0 or grace <= ping:
            raise ValueError("the ping interval must be positive and shorter than the grace")
        if burst < 1 or rate <= 0 or log_interval <= 0:
            raise ValueError("the failed-authentication burst, rate and log interval must be "
                             "positive")
        public_url = pick("public_url", "CORRAL_PUBLIC_URL", None)
        database = pick("database_url", "CORRAL_DATABASE_URL", None) or None
        return cls(
            data_dir=Path(str(pick("data_dir", "CORRAL_DATA_DIR", DEFAULT_DATA_DIR))),
            host=str(pick("host", "CORRAL_HOST", "0.0.0.0")),
            port=port,
            public_url=str(public_url).rstrip("/") if public_url else None,
            admin_access_key=access,
            admin_secret_key=Secret(secret) if secret else None,
            # Checked here, so that a bad URL is one line before anything starts.
            database_url=engine_url(str(database)) if database else None,
            ping_interval=ping,
            disconnect_grace=grace,
            host_lost_timeout=lost,
            header_timeout=header_timeout,
            max_request_line_bytes=max_line,
            max_header_field_bytes=max_field,
            trusted_proxies=parse_networks(environ.get("CORRAL_TRUSTED_PROXIES", "")),
            auth_failure_burst=burst,
            auth_failure_rate=rate,
            auth_log_interval=log_interval,
        )
