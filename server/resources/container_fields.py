"""Parsers for the container fields that take more than a type check.

Docker's short string forms (``-p`` ports, ``--expose``, ``-v`` volumes, ``--device``,
``--dns``, ``--dns-search``, ``--add-host``) and the structured fields (restart policy,
capabilities, log config, ulimits), each turned into the spec's shape. Each parser raises a
422 (``server.api.errors.invalid``) naming its field for a value Docker would refuse, so a bad
container fails at the API rather than on a host. Pure: no I/O. ``container_spec`` assembles
the whole spec from these.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Any

from server.api.errors import ValidationError, invalid

MAX_EXPOSED = 1000
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
ULIMITS = frozenset(("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                     "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"))
CAPABILITIES = frozenset((  # Linux's, without the CAP_ prefix
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE",
    "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG",
    "WAKE_ALARM"))
# What capAdd and capDrop offer as options: ALL and each name, as Rancher listed them.
CAPABILITY_OPTIONS = ("ALL", *sorted(CAPABILITIES))
DRIVER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.:/-]*")  # also plugins: vendor/name:tag
PROTOCOLS = ("tcp", "udp")  # Docker also knows sctp; Corral's port handling does not
DEFAULT_VOLUME_MODE = "rw"
DEFAULT_DEVICE_PERMISSIONS = "rwm"
PORT_WRONG_FORMAT = "PortWrongFormat"  # Rancher's code for a malformed ports entry
BLKIO_WEIGHTS = (10, 1000)  # the kernel's (CFQ) bounds, which Docker enforces
BLKIO_OPTIONS = ("weight", "readBps", "writeBps", "readIops", "writeIops")

_WILDCARD_IPS = frozenset({"0.0.0.0", "::"})
_PORT = re.compile(r"(?:(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>[0-9]{0,5}):)?"
                   r"(?P<ctr>[0-9]{1,5})(?:/(?P<proto>[a-zA-Z]+))?")
_EXPOSE = re.compile(r"(?P<lo>[0-9]{1,5})(?:-(?P<hi>[0-9]{1,5}))?(?:/(?P<proto>[a-zA-Z]+))?")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # Docker's own rule
_CAPABILITY = re.compile(r"[A-Z][A-Z_]*")
_LABEL = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
# Each volume mode option and its kind: a mode takes at most one option of each kind.
_MODE_KINDS = {
    "rw": "access", "ro": "access", "z": "selinux", "Z": "selinux", "nocopy": "nocopy",
    **dict.fromkeys(("shared", "rshared", "slave", "rslave", "private", "rprivate"),
                    "propagation"),
    **dict.fromkeys(("consistent", "cached", "delegated"), "consistency"),
}


def is_domain(text: str) -> bool:
    """Whether ``text`` is an RFC 1123 host or domain name (labels of up to 63 characters)."""
    return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in text.split("."))


def parse_ports(values: list[str]) -> list[dict[str, Any]]:
    """``ports``: ``[[hostIp:][hostPort]:]containerPort[/protocol]`` → port mappings.

    A missing ``hostPort`` is null (Docker picks one), a missing ``hostIp`` null (the agent
    binds the host's agent IP). Two entries that would bind the same address are refused. A
    malformed entry is Rancher's ``PortWrongFormat``.
    """
    ports: list[dict[str, Any]] = []
    bound: dict[tuple[int, str], set[str | None]] = {}  # (hostPort, protocol) → host IPs
    for entry in values:
        m = _PORT.fullmatch(entry)
        if m is None:
            raise _entry("ports", entry, "is not [[hostIp:]hostPort:]containerPort[/protocol], "
                         "e.g. 8080:80/tcp", PORT_WRONG_FORMAT)
        host_ip = _ip("ports", entry, m["ip"].strip("[]"), PORT_WRONG_FORMAT) \
            if m["ip"] else None
        host_port = _port("ports", entry, m["host"], PORT_WRONG_FORMAT) if m["host"] else None
        container_port = _port("ports", entry, m["ctr"], PORT_WRONG_FORMAT)
        protocol = _protocol("ports", entry, m["proto"], PORT_WRONG_FORMAT)
        if host_port is not None:
            ips = bound.setdefault((host_port, protocol), set())
            if _overlaps(host_ip, ips):
                raise _entry("ports", entry, f"binds host port {host_port}/{protocol}, which "
                             "another entry binds", "NotUnique")
            ips.add(host_ip)
        ports.append({"hostIp": host_ip, "hostPort": host_port,
                      "containerPort": container_port, "protocol": protocol})
    return ports


def parse_expose(values: list[str]) -> list[dict[str, Any]]:
    """``expose``: ``port[/protocol]`` or ``first-last[/protocol]`` → one entry per port."""
    exposed: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for entry in values:
        m = _EXPOSE.fullmatch(entry)
        if m is None:
            raise _entry("expose", entry, "is not port[/protocol] or first-last[/protocol]")
        low = _port("expose", entry, m["lo"])
        high = _port("expose", entry, m["hi"]) if m["hi"] else low
        if high < low:
            raise _entry("expose", entry, "is a range that ends before it starts")
        protocol = _protocol("expose", entry, m["proto"])
        for number in range(low, high + 1):
            if (number, protocol) not in seen:
                seen.add((number, protocol))
                exposed.append({"containerPort": number, "protocol": protocol})
            if len(exposed) > MAX_EXPOSED:
                raise invalid("MaxLimitExceeded", "expose",
                              f"expose names more than {MAX_EXPOSED} ports")
    return exposed


def parse_volumes(values: list[str], *, driver: str = "local"
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``dataVolumes`` → (binds, volumes).

    ``/host:/ctr[:mode]`` is a bind, ``name:/ctr[:mode]`` a named volume, ``/ctr[:mode]`` an
    anonymous one (name null); volumes use ``driver``. Paths are cleaned, the mode is kept as
    given (``rw`` when absent), and each container path may be used once.
    """
    binds: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    destinations: set[str] = set()
    for entry in values:
        source, destination, mode = _split_volume(entry)
        destination = _absolute("dataVolumes", entry, destination)
        if destination == "/":
            raise _entry("dataVolumes", entry, "mounts over the container's root /")
        if destination in destinations:
            raise _entry("dataVolumes", entry, f"uses container path {destination} again",
                         "NotUnique")
        destinations.add(destination)
        if source is not None and source.startswith("/"):
            binds.append({"source": _absolute("dataVolumes", entry, source),
                          "destination": destination,
                          "mode": _volume_mode(entry, mode, bind=True)})
        elif source is None or _VOLUME_NAME.fullmatch(source):
            volumes.append({"name": source, "destination": destination,
                            "mode": _volume_mode(entry, mode, bind=False), "driver": driver})
        else:
            raise _entry("dataVolumes", entry, f"has source {source!r}, which is neither an "
                         "absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)")
    return binds, volumes


def parse_devices(values: list[str]) -> list[dict[str, Any]]:
    """``devices``: ``/dev/x[:/dev/y][:permissions]`` → host path, container path, permissions."""
    devices: list[dict[str, Any]] = []
    paths: set[str] = set()
    for entry in values:
        parts = entry.split(":")
        if len(parts) == 2 and _is_permissions(parts[1]):
            parts = [parts[0], parts[0], parts[1]]
        elif len(parts) < 3:
            parts = [parts[0], parts[-1], DEFAULT_DEVICE_PERMISSIONS]
        if len(parts) != 3 or not _is_permissions(parts[2]):
            raise _entry("devices", entry, "is not /dev/host[:/dev/container][:permissions] "
                         "with permissions made of r, w and m")
        device = {"pathOnHost": _absolute("devices", entry, parts[0]),
                  "pathInContainer": _absolute("devices", entry, parts[1]),
                  "permissions": parts[2]}
        if device["pathInContainer"] in paths:
            raise _entry("devices", entry, f"uses {device['pathInContainer']} again",
                         "NotUnique")
        paths.add(device["pathInContainer"])
        devices.append(device)
    return devices


def parse_dns(values: list[str]) -> list[str]:
    """``dns``: name server IP addresses."""
    return [_ip("dns", entry, entry) for entry in values]


def parse_dns_search(values: list[str]) -> list[str]:
    """``dnsSearch``: domains (a trailing dot allowed; ``.`` alone means none)."""
    for entry in values:
        if entry != "." and not is_domain(entry.removesuffix(".")):
            raise _entry("dnsSearch", entry, "is not a domain name")
    return list(values)


def parse_extra_hosts(values: list[str]) -> list[str]:
    """``extraHosts``: ``name:ip`` (IPv4, IPv6 or ``host-gateway``), as Docker takes them."""
    hosts: list[str] = []
    for entry in values:
        name, colon, address = entry.partition(":")
        if not colon or not name or any(c.isspace() for c in name):
            raise _entry("extraHosts", entry, "is not name:ip")
        if address != "host-gateway":
            address = _ip("extraHosts", entry, address.removeprefix("[").removesuffix("]"))
        hosts.append(f"{name}:{address}")
    return hosts


def parse_capabilities(values: list[str], field: str) -> list[str]:
    """``capAdd``/``capDrop``: upper-case names without ``CAP_``, each once; or ``ALL``."""
    caps: list[str] = []
    for entry in values:
        cap = entry.upper().removeprefix("CAP_")
        if not _CAPABILITY.fullmatch(cap):
            raise _entry(field, entry, "is not a capability name")
        if cap != "ALL" and cap not in CAPABILITIES:
            raise _entry(field, entry, "is not a capability Linux knows", "InvalidOption")
        if cap not in caps:
            caps.append(cap)
    return caps


def parse_restart_policy(value: Any) -> dict[str, Any] | None:
    """``restartPolicy``: ``{name, maximumRetryCount}``, or a string (``on-failure:3``)."""
    field = "restartPolicy"
    name: Any
    if value is None or value == "":
        return None
    if isinstance(value, str):
        name, colon, count_text = value.partition(":")
        if colon and not (count_text.isascii() and count_text.isdigit() and len(count_text) < 10):
            raise invalid("InvalidFormat", field, f"{field} {value!r} is not name[:retries]")
        count = int(count_text) if colon else 0
    elif isinstance(value, dict):
        name, count = value.get("name"), check_int(value.get("maximumRetryCount"), field) or 0
        if count < 0:
            raise invalid("InvalidFormat", field, "maximumRetryCount must be 0 or more")
    else:
        raise invalid("InvalidType", field, f"{field} must be an object or a string")
    if name not in RESTART_POLICIES:
        raise invalid("InvalidOption", field,
                      f"{field} name must be one of {', '.join(RESTART_POLICIES)}")
    if count and name != "on-failure":
        raise invalid("InvalidOption", field, "maximumRetryCount is only for on-failure")
    return {"name": name, "maximumRetryCount": count}


def parse_log_config(value: Any) -> dict[str, Any] | None:
    """``logConfig``: ``{driver, config}``, or null when neither is given."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("InvalidType", "logConfig", "logConfig must be {driver, config}")
    config = check_str_map(value.get("config"), "logConfig")
    driver = value.get("driver")
    if driver in (None, "") and not config:
        return None
    if not isinstance(driver, str) or not DRIVER_NAME.fullmatch(driver):
        raise invalid("InvalidFormat", "logConfig",
                      "logConfig needs a driver name, such as json-file or syslog")
    return {"driver": driver, "config": config}


def parse_ulimits(value: Any) -> list[dict[str, Any]]:
    """``ulimits``: ``{name, soft, hard}`` each; hard defaults to soft, -1 means unlimited."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise invalid("InvalidType", "ulimits", "ulimits must be a list of {name, soft, hard}")
    ulimits: list[dict[str, Any]] = []
    for item in value:
        name = item.get("name")
        soft = check_int(item.get("soft"), "ulimits")
        hard = check_int(item.get("hard"), "ulimits")
        hard = soft if hard is None else hard
        if name not in ULIMITS:
            raise invalid("InvalidOption", "ulimits", f"ulimit {name!r} is not one of "
                          f"{', '.join(sorted(ULIMITS))}")
        if soft is None or hard is None or soft < -1 or hard < -1:
            raise invalid("InvalidFormat", "ulimits",
                          f"ulimit {name} needs a soft limit of 0 or more, or -1 for unlimited")
        if any(u["name"] == name for u in ulimits):
            raise invalid("NotUnique", "ulimits", f"ulimit {name} is given twice")
        if hard != -1 and (soft == -1 or soft > hard):
            raise invalid("MaxLimitExceeded", "ulimits",
                          f"ulimit {name}: the soft limit is above the hard limit")
        ulimits.append({"name": name, "soft": soft, "hard": hard})
    return ulimits


def parse_blkio_weight(value: Any, field: str = "blkioWeight") -> int | None:
    """A block I/O weight: 10-1000, with 0 and null meaning Docker's default."""
    weight = check_int(value, field)
    if not weight:
        return None
    low, high = BLKIO_WEIGHTS
    if weight < low:
        raise invalid("MinLimitExceeded", field, f"{field} must be at least {low} (or 0 for "
                      "the default)")
    if weight > high:
        raise invalid("MaxLimitExceeded", field, f"{field} must be at most {high}")
    return weight


def parse_blkio_device_options(value: Any) -> list[dict[str, Any]]:
    """``blkioDeviceOptions``: ``{"/dev/sda": {weight, readBps, writeBps, readIops,
    writeIops}}`` → one entry per device, sorted by path; rates are 0 or more."""
    field = "blkioDeviceOptions"
    if value is None:
        return []
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise invalid("InvalidType", field, f"{field} maps device paths to "
                      "{weight, readBps, writeBps, readIops, writeIops}")
    options: list[dict[str, Any]] = []
    for path in sorted(value):
        limits = value[path]
        unknown = sorted(set(limits) - set(BLKIO_OPTIONS))
        if unknown:
            raise invalid("InvalidOption", field, f"{field} for {path} has {unknown[0]!r}, "
                          f"which is not one of {', '.join(BLKIO_OPTIONS)}")
        entry: dict[str, Any] = {"path": _absolute(field, path, path),
                                 "weight": parse_blkio_weight(limits.get("weight"), field)}
        for key in ("readBps", "writeBps", "readIops", "writeIops"):
            rate = check_int(limits.get(key), field)  # bytes or operations per second
            if rate is not None and rate < 0:
                raise invalid("MinLimitExceeded", field, f"{field} for {path}: {key} must "
                              "be 0 or more")
            entry[key] = rate or None
        options.append(entry)
    return options


def check_int(value: Any, field: str) -> int | None:
    """``value`` when it is an integer or null (for json fields, which the schema leaves be)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise invalid("InvalidType", field, f"{field} must be an integer")
    return value


def check_str_map(value: Any, field: str) -> dict[str, str]:
    """A copy of ``value`` when it maps strings to strings; null is ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid("InvalidType", field, f"{field} must map strings to strings")
    return dict(value)


def _entry(field: str, entry: str, problem: str, code: str = "InvalidFormat") -> ValidationError:
    return invalid(code, field, f"{field} entry {entry!r} {problem}")


def _ip(field: str, entry: str, text: str, code: str = "InvalidFormat") -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _entry(field, entry, f"has {text!r}, which is not an IP address", code) from None


def _port(field: str, entry: str, text: str, code: str = "InvalidFormat") -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise _entry(field, entry, f"has port {text}, outside 1-65535", code)
    return port


def _protocol(field: str, entry: str, text: str | None, code: str = "InvalidFormat") -> str:
    protocol = (text or "tcp").lower()
    if protocol not in PROTOCOLS:
        raise _entry(field, entry, f"has protocol {text!r}; use tcp or udp", code)
    return protocol


def _overlaps(ip: str | None, bound: set[str | None]) -> bool:
    """Whether ``ip`` clashes with IPs already bound on a port: a wildcard overlaps any IP."""
    if not bound:
        return False
    return ip in bound or ip in _WILDCARD_IPS or not _WILDCARD_IPS.isdisjoint(bound)


def _split_volume(entry: str) -> tuple[str | None, str, str | None]:
    """(source or None, destination, mode or None); ``/ctr:ro`` is an anonymous volume."""
    parts = entry.split(":")
    if len(parts) == 1:
        return None, parts[0], None
    if len(parts) == 2 and parts[0].startswith("/") and not parts[1].startswith("/"):
        return None, parts[0], parts[1]
    if len(parts) == 2:
        return parts[0], parts[1], None
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise _entry("dataVolumes", entry, "is not [source:]/container/path[:mode]")


def _volume_mode(entry: str, mode: str | None, *, bind: bool) -> str:
    if mode is None:
        return DEFAULT_VOLUME_MODE
    kinds = [_MODE_KINDS.get(option) for option in mode.split(",")]
    if (None in kinds or len(set(kinds)) != len(kinds)
            or ("propagation" in kinds and not bind) or ("nocopy" in kinds and bind)):
        what = "a host path" if bind else "a volume"
        raise _entry("dataVolumes", entry, f"has mode {mode!r}, which is not valid for {what}; "
                     "use options such as ro, rw, z or Z separated by commas")
    return mode


def _absolute(field: str, entry: str, path: str) -> str:
    """The cleaned absolute path, or a 422."""
    if not path.startswith("/"):
        raise _entry(field, entry, f"has path {path!r}, which is not absolute")
    return posixpath.normpath("/" + path.lstrip("/"))


def _is_permissions(text: str) -> bool:
    return bool(text) and set(text) <= set("rwm") and len(set(text)) == len(text)
