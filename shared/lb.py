"""The payloads of managed load balancers, which each agent runs as HAProxy processes on its
own host. Pure.

The server sends each agent ``lb.apply``: every balancer instance placed on its host, each
with its port rules, their backends resolved to servers, its certificates and its custom
HAProxy text; the whole desired state, never a delta, so an agent that missed one applies the
next. The agent answers with the version it now runs (:class:`LbApplied`) and reports each
balancer's state as it changes in ``lbReport`` messages (``shared.protocol.LbReport``) whose
results are ``shared.lb_report.LbResult`` objects. ``shared.haproxy_config`` renders a balancer.

Field names follow Rancher 1.x's ``lbConfig`` (``portRules``, ``stickinessPolicy``); every
size is bounded, so one payload stays well inside a frame.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Self

from shared.fields import (
    Applied,
    Fields,
    JsonObject,
    Refuse,
    bounded_or,
    invalid_data,
)
from shared.lb_report import MAX_VERSION, UUID

HTTP_PROTOCOLS = ("http", "https")
TCP_PROTOCOLS = ("tcp", "tls", "sni")
RULE_PROTOCOLS = HTTP_PROTOCOLS + TCP_PROTOCOLS
TERMINATING = ("https", "tls")  # TLS ends in HAProxy: they need a certificate
BACKEND_PROTOCOLS = ("http", "tcp")
STICKINESS_MODES = ("rewrite", "insert", "prefix")

MAX_BALANCERS = 64
MAX_RULES = 256
MAX_BACKENDS = 256
MAX_SERVERS = 1000  # per backend
MAX_CERTIFICATES = 100
MAX_PEM = 64 * 1024
MAX_CUSTOM_CONFIG = 64 * 1024
MAX_HOSTNAME = 253
MAX_PATH = 1024
MAX_REQUEST_LINE = 1024
MAX_DURATION_MS = 86_400_000
MAX_THRESHOLD = 1000

# HAProxy's identifiers (proxies, servers); certificates also name files, so no leading dot.
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_HOST_LABELS = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_COOKIE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PATH = re.compile(r"/[^\s#]*")


def _name(f: Fields, key: str, pattern: re.Pattern[str] = _NAME) -> str:
    value = f.text(key)
    if not pattern.fullmatch(value):
        what = "_.:-" if pattern is _NAME else "_.- (not starting with a dot)"
        raise f.refuse(f"{f.where}.{key} must be at most 64 letters, digits or {what}")
    return value


def _port(f: Fields, key: str) -> int:
    value = f.integer(key)
    if not 0 < value < 65536:
        raise f.refuse(f"{f.where}.{key} must be a port number, 1 to 65535")
    return value


def _address(f: Fields, key: str) -> str:
    value = f.text(key)
    try:
        return str(ip_address(value))
    except ValueError:
        raise f.refuse(f"{f.where}.{key} must be an IPv4 or IPv6 address") from None


def _limit(f: Fields, key: str, maximum: int, what: str) -> None:
    raw = f.obj.get(key)
    if isinstance(raw, list) and len(raw) > maximum:
        raise f.refuse(f"{f.where}.{key} must hold at most {maximum} {what}")


def _unique(f: Fields, key: str, names: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise f.refuse(f"{f.where}.{key}[{i}] repeats the {what} {name}")
        seen.add(name)


@dataclass(frozen=True)
class Server:
    """One target of a backend; a ``draining`` one gets no new connection (weight 0) while the
    open ones finish."""

    name: str
    address: str
    port: int
    draining: bool = False

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(_name(f, "name"), _address(f, "address"), _port(f, "port"),
                   f.flag("draining"))

    def dump(self) -> JsonObject:
        return {"name": self.name, "address": self.address, "port": self.port,
                "draining": self.draining}


@dataclass(frozen=True)
class BackendCheck:
    """HAProxy's own check of a backend's servers, from the target service's Rancher
    ``healthCheck``: an HTTP check with ``request_line`` (``GET /ping HTTP/1.0``), else a TCP
    connect, to ``port`` of each server."""

    port: int
    request_line: str | None = None
    interval_ms: int = 2000
    timeout_ms: int = 2000
    rise: int = 2
    fall: int = 3

    @classmethod
    def read(cls, f: Fields) -> Self:
        request_line = f.opt_text("requestLine") or None
        if request_line is not None and (
                len(request_line) > MAX_REQUEST_LINE or not request_line.isascii()
                or not request_line.isprintable() or len(request_line.split()) not in (2, 3)):
            raise f.refuse(f"{f.where}.requestLine must be one line of at most "
                           f"{MAX_REQUEST_LINE} ASCII characters: METHOD URI [VERSION]")
        return cls(port=_port(f, "port"), request_line=request_line,
                   interval_ms=bounded_or(f, "interval", 2000, MAX_DURATION_MS),
                   timeout_ms=bounded_or(f, "responseTimeout", 2000, MAX_DURATION_MS),
                   rise=bounded_or(f, "healthyThreshold", 2, MAX_THRESHOLD),
                   fall=bounded_or(f, "unhealthyThreshold", 3, MAX_THRESHOLD))

    def dump(self) -> JsonObject:
        return {"port": self.port, "requestLine": self.request_line,
                "interval": self.interval_ms, "responseTimeout": self.timeout_ms,
                "healthyThreshold": self.rise, "unhealthyThreshold": self.fall}


@dataclass(frozen=True)
class Backend:
    """Where rules send traffic: HAProxy's ``backend NAME``, balanced round-robin."""

    name: str
    protocol: str
    servers: tuple[Server, ...] = ()
    check: BackendCheck | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        protocol = f.text("protocol")
        if protocol not in BACKEND_PROTOCOLS:
            raise f.refuse(f"{f.where}.protocol must be one of {', '.join(BACKEND_PROTOCOLS)}")
        _limit(f, "servers", MAX_SERVERS, "servers")
        servers = f.nested_list("servers", Server.read)
        _unique(f, "servers", [s.name for s in servers], "server name")
        return cls(_name(f, "name"), protocol, servers, f.opt_nested("check", BackendCheck.read))

    def dump(self) -> JsonObject:
        return {"name": self.name, "protocol": self.protocol,
                "servers": [s.dump() for s in self.servers],
                "check": None if self.check is None else self.check.dump()}


@dataclass(frozen=True)
class PortRule:
    """One of Rancher's ``portRules``: traffic to ``source_port`` (matching ``hostname`` and
    ``path`` prefix when given) goes to ``backend``. A hostname may be ``*.example.com`` or
    ``example.*``. Without priorities, rules are tried in Rancher's order (see
    ``shared.haproxy_config.ordered``); a lower priority goes first."""

    source_port: int
    protocol: str
    backend: str
    hostname: str | None = None
    path: str | None = None
    priority: int | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        protocol = f.text("protocol")
        if protocol == "udp":
            raise f.refuse(f"{f.where}.protocol udp cannot be balanced by HAProxy; use "
                           f"one of {', '.join(RULE_PROTOCOLS)}")
        if protocol not in RULE_PROTOCOLS:
            raise f.refuse(f"{f.where}.protocol must be one of {', '.join(RULE_PROTOCOLS)}")
        hostname = f.opt_text("hostname") or None
        if hostname is not None:
            bare = hostname.removeprefix("*.") if hostname.startswith("*.") else \
                hostname.removesuffix(".*")
            if len(hostname) > MAX_HOSTNAME or not _HOST_LABELS.fullmatch(bare):
                raise f.refuse(f"{f.where}.hostname must be a host name, optionally starting "
                               "with *. or ending with .*")
            if protocol == "tcp":
                raise f.refuse(f"{f.where}.hostname cannot be matched on a tcp port; use "
                               "sni or tls")
        path = f.opt_text("path") or None
        if path is not None:
            if len(path) > MAX_PATH or not _PATH.fullmatch(path):
                raise f.refuse(f"{f.where}.path must start with / and hold no spaces or #")
            if protocol not in HTTP_PROTOCOLS:
                raise f.refuse(f"{f.where}.path can only be matched on an http or https port")
        priority = f.opt_integer("priority")
        if priority is not None and not 0 <= priority < 2**31:
            raise f.refuse(f"{f.where}.priority must be between 0 and {2**31 - 1}")
        return cls(source_port=_port(f, "sourcePort"), protocol=protocol,
                   backend=_name(f, "backend"), hostname=hostname, path=path,
                   priority=priority)

    def dump(self) -> JsonObject:
        return {"sourcePort": self.source_port, "protocol": self.protocol,
                "hostname": self.hostname, "path": self.path, "priority": self.priority,
                "backend": self.backend}


@dataclass(frozen=True)
class Certificate:
    """A certificate HAProxy serves: ``pem`` holds the certificate, its chain and its key
    (decrypted by the server for this payload only; never printed)."""

    name: str
    pem: str = field(repr=False)

    @classmethod
    def read(cls, f: Fields) -> Self:
        pem = f.text("pem")
        if len(pem) > MAX_PEM or "-----BEGIN" not in pem or not pem.isascii():
            raise f.refuse(f"{f.where}.pem must be a PEM bundle of at most {MAX_PEM} bytes")
        return cls(_name(f, "name", _FILE_NAME), pem)

    def dump(self) -> JsonObject:
        return {"name": self.name, "pem": self.pem}


@dataclass(frozen=True)
class Stickiness:
    """Rancher's ``stickinessPolicy``: HTTP sessions stick to a server by the cookie
    ``cookie`` (``name`` is the policy's own name, for people)."""

    cookie: str
    mode: str = "insert"
    name: str | None = None
    domain: str | None = None
    indirect: bool = False
    nocache: bool = False
    postonly: bool = False

    @classmethod
    def read(cls, f: Fields) -> Self:
        mode = f.opt_text("mode") or "insert"
        if mode not in STICKINESS_MODES:
            raise f.refuse(f"{f.where}.mode must be one of {', '.join(STICKINESS_MODES)}")
        cookie = f.text("cookie")
        if not _COOKIE.fullmatch(cookie):
            raise f.refuse(f"{f.where}.cookie must be at most 64 letters, digits or _.-")
        domain = f.opt_text("domain") or None
        if domain is not None and not _HOST_LABELS.fullmatch(domain.removeprefix(".")):
            raise f.refuse(f"{f.where}.domain must be a domain name")
        name = f.opt_text("name") or None
        if name is not None and (len(name) > 128 or not name.isprintable()):
            raise f.refuse(f"{f.where}.name must be at most 128 printable characters")
        return cls(cookie=cookie, mode=mode, name=name, domain=domain,
                   indirect=f.flag("indirect"), nocache=f.flag("nocache"),
                   postonly=f.flag("postonly"))

    def dump(self) -> JsonObject:
        return {"name": self.name, "cookie": self.cookie, "mode": self.mode,
                "domain": self.domain, "indirect": self.indirect, "nocache": self.nocache,
                "postonly": self.postonly}


@dataclass(frozen=True)
class Balancer:
    """One load balancer instance on this host: one HAProxy, in a directory named by
    ``uuid`` (the instance record's). ``config_version`` changes with every change to any of
    it, and is what the agent reports it runs."""

    uuid: str
    name: str
    config_version: str
    rules: tuple[PortRule, ...] = ()
    backends: tuple[Backend, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    default_certificate: str | None = None
    stickiness: Stickiness | None = None
    custom_config: str = ""
    bind_address: str | None = None  # None: every address of the host

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)

    @classmethod
    def read(cls, f: Fields) -> Self:
        uuid = f.text("uuid")
        if not UUID.fullmatch(uuid):
            raise f.refuse(f"{f.where}.uuid must be at most 64 letters, digits or ._:-")
        version = f.text("configVersion")
        if len(version) > MAX_VERSION or not version.isprintable():
            raise f.refuse(f"{f.where}.configVersion must be at most {MAX_VERSION} "
                           "printable characters")
        name = f.opt_text("name") or ""
        if len(name) > 128 or not name.isprintable():
            raise f.refuse(f"{f.where}.name must be at most 128 printable characters")
        _limit(f, "rules", MAX_RULES, "rules")
        _limit(f, "backends", MAX_BACKENDS, "backends")
        _limit(f, "certificates", MAX_CERTIFICATES, "certificates")
        rules = f.nested_list("rules", PortRule.read)
        backends = f.nested_list("backends", Backend.read)
        certificates = f.nested_list("certificates", Certificate.read)
        _unique(f, "backends", [b.name for b in backends], "backend name")
        _unique(f, "certificates", [c.name for c in certificates], "certificate name")
        custom = f.opt_text("customConfig") or ""
        if len(custom) > MAX_CUSTOM_CONFIG or "\x00" in custom:
            raise f.refuse(f"{f.where}.customConfig must be at most {MAX_CUSTOM_CONFIG} "
                           "characters of text")
        default = f.opt_text("defaultCertificate") or None
        if default is not None and default not in {c.name for c in certificates}:
            raise f.refuse(f"{f.where}.defaultCertificate {default} is not one of its "
                           "certificates")
        bind = _address(f, "bindAddress") if f.has("bindAddress") else None
        _check_rules(f, rules, {b.name: b for b in backends}, bool(certificates))
        return cls(uuid=uuid, name=name, config_version=version, rules=rules,
                   backends=backends, certificates=certificates, default_certificate=default,
                   stickiness=f.opt_nested("stickiness", Stickiness.read),
                   custom_config=custom, bind_address=bind)

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "name": self.name, "configVersion": self.config_version,
                "bindAddress": self.bind_address, "rules": [r.dump() for r in self.rules],
                "backends": [b.dump() for b in self.backends],
                "certificates": [c.dump() for c in self.certificates],
                "defaultCertificate": self.default_certificate,
                "stickiness": None if self.stickiness is None else self.stickiness.dump(),
                "customConfig": self.custom_config}


def _check_rules(f: Fields, rules: tuple[PortRule, ...], backends: dict[str, Backend],
                 has_certificates: bool) -> None:
    """What HAProxy would refuse or silently get wrong across rules: one protocol per port
    (one listener each), a backend of the rule's family, a certificate to terminate TLS."""
    ports: dict[int, str] = {}
    for i, rule in enumerate(rules):
        where = f"{f.where}.rules[{i}]"
        known = ports.setdefault(rule.source_port, rule.protocol)
        if known != rule.protocol:
            raise f.refuse(f"{where}: port {rule.source_port} is both {known} and "
                           f"{rule.protocol}; one port takes one protocol")
        backend = backends.get(rule.backend)
        if backend is None:
            raise f.refuse(f"{where}.backend {rule.backend} is not one of the backends")
        family = "http" if rule.protocol in HTTP_PROTOCOLS else "tcp"
        if backend.protocol != family:
            raise f.refuse(f"{where}: a {rule.protocol} rule needs a {family} backend, and "
                           f"{backend.name} is {backend.protocol}")
        if rule.protocol in TERMINATING and not has_certificates:
            raise f.refuse(f"{where}: a {rule.protocol} port needs a certificate")


@dataclass(frozen=True)
class LbApply:
    """``lb.apply``: every balancer this host must run (none: stop them all). ``version``
    names the whole (a digest), so that logs and the reply say which one a host runs."""

    version: str = ""
    balancers: tuple[Balancer, ...] = ()

    @classmethod
    def of(cls, balancers: tuple[Balancer, ...]) -> Self:
        """The payload of ``balancers``, its version a digest of them."""
        text = json.dumps([b.dump() for b in balancers], sort_keys=True)
        return cls(hashlib.sha256(text.encode()).hexdigest()[:16], balancers)

    @classmethod
    def parse(cls, obj: object, where: str = "data", refuse: Refuse = invalid_data) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        _limit(f, "balancers", MAX_BALANCERS, "balancers")
        balancers = f.nested_list("balancers", Balancer.read)
        _unique(f, "balancers", [b.uuid for b in balancers], "balancer uuid")
        return cls(f.opt_text("version") or "", balancers)

    def dump(self) -> JsonObject:
        return {"version": self.version, "balancers": [b.dump() for b in self.balancers]}


@dataclass(frozen=True)
class LbApplied(Applied):
    """The reply of ``lb.apply``: the version now applied (each balancer's own outcome comes
    in ``lbReport``)."""
