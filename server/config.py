"""Server settings, read once at the edge (CLI flags and environment) into a frozen dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
    report_interval: float = 60.0
    hello_timeout: float = 10.0
    instruction_timeout: float = 45.0
    max_body_bytes: int = 1024 * 1024
    agent_queue_size: int = 256
    # The change log keeps at least this many entries (and every one younger than 10 min).
    change_log_keep: int = 100_000

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
        except ValueError as exc:
            raise ValueError(f"bad number in settings: {exc}") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        if ping <= 0 or grace <= ping:
            raise ValueError("the ping interval must be positive and shorter than the grace")
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
        )
