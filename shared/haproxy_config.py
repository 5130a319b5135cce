"""The ``haproxy.cfg`` of one balancer (``shared.lb.Balancer``), and the merge of its custom
HAProxy text into it. Pure: no I/O; the agent writes the text and runs HAProxy
(``agent.lb``).

What the rendered text does:

- ``global`` exposes the admin socket (``level admin expose-fd listeners``, for the runtime API
  and the master's socket hand-over on reload) and names the server state file, so that a
  reload keeps each server's check and admin state; ``defaults`` has what made reloads lose
  no request (``retries 3``, ``option redispatch``, ``option idle-close-on-response``).
- One frontend per source port, named by the port as Rancher named them (``frontend 80``), so
  that a custom ``frontend 80`` section adds to it. ``http`` and ``https`` route on the Host
  header (its port ignored) and the path prefix; ``https`` and ``tls`` end TLS with every
  certificate, HAProxy choosing by SNI (the default one first); ``sni`` routes on the TLS
  ClientHello's server name without ending TLS; ``tcp`` sends everything to one backend.
- Rules are tried in Rancher's order (:func:`ordered`).
- One backend per ``Backend``, balanced round-robin; a draining server has weight 0 (no new
  connection, the open ones finish); stickiness is a cookie; a ``BackendCheck`` is HAProxy's
  own ``check``.

:func:`merge_custom` adds the balancer's custom text section by section (see there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.lb import HTTP_PROTOCOLS, TERMINATING, Backend, Balancer, PortRule, Server

HARD_STOP_AFTER = "30s"  # an old worker's open connections get this long after a reload
DEFAULT_SERVER_MAXCONN = 256  # queue in HAProxy rather than overflow a small backlog
SNI_INSPECT_DELAY = "5s"
SECTION_KEYWORDS = frozenset({
    "global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist",
    "mailers", "program", "http-errors", "ring", "cache", "fcgi-app",
})
# Keywords that take one value in a section: a custom line replaces the generated one.
SINGLE_VALUED = frozenset({
    "maxconn", "balance", "mode", "retries", "hard-stop-after", "nbthread", "cookie",
    "hash-type", "fullconn", "default_backend", "default-server", "log-format", "maxconnrate",
    "server-state-file", "load-server-state-from-file", "grace",
})
# Where a section's routing starts: added custom lines go before it, so that they are read
# before the generated routing (and a custom use_backend wins over a generated one).
_ROUTING = ("use_backend", "default_backend", "server", "use-server")


@dataclass(frozen=True)
class Paths:
    """Where the files a balancer's config names live."""

    certs_dir: str
    admin_socket: str
    state_file: str

    @classmethod
    def under(cls, directory: str) -> Paths:
        return cls(f"{directory}/certs", f"{directory}/admin.sock",
                   f"{directory}/servers.state")


@dataclass
class Section:
    """One section: its header (``backend web``) and its lines, without indentation."""

    header: str
    lines: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return " ".join(self.header.split())


# --- rules --------------------------------------------------------------------------------


def _wildcard(hostname: str | None) -> bool:
    return hostname is not None and (hostname.startswith("*.") or hostname.endswith(".*"))


def rank(rule: PortRule) -> int:
    """Rancher's order of rules: hostname and path, hostname, wildcard hostname and path,
    wildcard hostname, path, then the default."""
    if rule.hostname is not None and not _wildcard(rule.hostname):
        return 0 if rule.path else 1
    if rule.hostname is not None:
        return 2 if rule.path else 3
    return 4 if rule.path else 5


def ordered(rules: Iterable[PortRule]) -> list[PortRule]:
    """The rules in the order they are tried: a lower priority first (rules without one
    after those with one), then Rancher's order (:func:`rank`), a longer path before a
    shorter one (so ``/api/v2`` is not hidden by ``/api``), then as sent (a stable sort)."""
    return sorted(rules, key=lambda r: (r.priority is None, r.priority or 0, rank(r),
                                        -len(r.path or "")))


# --- rendering ----------------------------------------------------------------------------


def render(balancer: Balancer, paths: Paths) -> str:
    """The whole ``haproxy.cfg`` of ``balancer``, custom text merged in."""
    generated = sections(balancer, paths)
    if balancer.custom_config.strip():
        return merge_custom(generated, balancer.custom_config)
    return dump(generated)


def render_without_servers(balancer: Balancer, paths: Paths) -> str:
    """:func:`render` without the generated ``server`` lines: two balancers whose texts are
    equal this way differ only in their servers, a change the runtime API can make."""
    generated = sections(balancer, paths, servers=False)
    if balancer.custom_config.strip():
        return merge_custom(generated, balancer.custom_config)
    return dump(generated)


def sections(balancer: Balancer, paths: Paths, *, servers: bool = True) -> list[Section]:
    out = [
        Section("global", [
            f"stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
            "stats timeout 2m",
            f"hard-stop-after {HARD_STOP_AFTER}",
            f"server-state-file {paths.state_file}",
        ]),
        Section("defaults", [
            "retries 3",
            "option redispatch",
            "option idle-close-on-response",
            "load-server-state-from-file global",
            "timeout connect 5s",
            "timeout client 60s",
            "timeout server 60s",
            "timeout http-request 10s",
            "timeout http-keep-alive 60s",
            "timeout tunnel 1h",
            "timeout queue 30s",
            f"default-server maxconn {DEFAULT_SERVER_MAXCONN}",
        ]),
    ]
    by_port: dict[int, list[PortRule]] = {}
    for rule in balancer.rules:
        by_port.setdefault(rule.source_port, []).append(rule)
    for port in sorted(by_port):
        out.append(_frontend(balancer, port, ordered(by_port[port]), paths))
    for backend in sorted(balancer.backends, key=lambda b: b.name):
        out.append(_backend(balancer, backend, servers=servers))
    return out


def _crt(balancer: Balancer, paths: Paths) -> str:
    """HAProxy serves the first certificate it loads to a client without SNI, or with a name
    no certificate has: the default one is loaded first, from its own file, and the others
    from a directory of their own, so that each is loaded once."""
    default = default_certificate(balancer)
    crt = f"crt {paths.certs_dir}/{certificate_file(balancer, default)}" if default else ""
    if len(balancer.certificates) > 1:
        crt += f" crt {paths.certs_dir}/sni/"
    return crt.strip()


def certificate_file(balancer: Balancer, name: str | None) -> str:
    """Where certificate ``name`` goes, under the certificates directory."""
    return f"default/{name}.pem" if name == default_certificate(balancer) else f"sni/{name}.pem"


def default_certificate(balancer: Balancer) -> str | None:
    if balancer.default_certificate is not None:
        return balancer.default_certificate
    names = sorted(c.name for c in balancer.certificates)
    return names[0] if names else None


def _host_match(fetch: str, hostname: str) -> str:
    if hostname.startswith("*."):
        return f"{fetch} -m end -i {hostname[1:]}"
    if hostname.endswith(".*"):
        return f"{fetch} -m beg -i {hostname[:-1]}"
    return f"{fetch} -m str -i {hostname}"


def _frontend(balancer: Balancer, port: int, rules: list[PortRule], paths: Paths) -> Section:
    protocol = rules[0].protocol
    address = balancer.bind_address or "*"
    bind = f"bind {address}:{port}"
    if protocol in TERMINATING:
        bind += f" ssl {_crt(balancer, paths)}"
    lines = [bind]
    if protocol in HTTP_PROTOCOLS:
        scheme = "https" if protocol == "https" else "http"
        lines += ["mode http", "option forwardfor",
                  "http-request set-header X-Forwarded-Port %[dst_port]",
                  f"http-request set-header X-Forwarded-Proto {scheme}"]
        host_fetch = "req.hdr(host),field(1,:)"
    else:
        lines.append("mode tcp")
        host_fetch = "ssl_fc_sni" if protocol == "tls" else "req_ssl_sni"
        if protocol == "sni":
            lines += [f"tcp-request inspect-delay {SNI_INSPECT_DELAY}",
                      "tcp-request content accept if { req_ssl_hello_type 1 }"]
    default: str | None = None
    for rule in rules:
        conditions = []
        if rule.hostname is not None:
            conditions.append(f"{{ {_host_match(host_fetch, rule.hostname)} }}")
        if rule.path is not None:
            conditions.append(f"{{ path_beg {rule.path} }}")
        if conditions:
            lines.append(f"use_backend {rule.backend} if {' '.join(conditions)}")
        elif default is None:
            default = rule.backend
    if default is not None:
        lines.append(f"default_backend {default}")
    return Section(f"frontend {port}", lines)


def _backend(balancer: Balancer, backend: Backend, *, servers: bool) -> Section:
    lines = [f"mode {backend.protocol}", "balance roundrobin"]
    sticky = balancer.stickiness
    if sticky is not None and backend.protocol == "http":
        cookie = f"cookie {sticky.cookie} {sticky.mode}"
        cookie += "".join(f" {flag}" for flag, on in (
            ("indirect", sticky.indirect), ("nocache", sticky.nocache),
            ("postonly", sticky.postonly)) if on)
        if sticky.domain:
            cookie += f" domain {sticky.domain}"
        lines.append(cookie)
    check = backend.check
    if check is not None:
        if check.request_line is not None:
            lines.append(f"option httpchk {check.request_line}")
        lines.append(f"timeout check {check.timeout_ms}ms")
    if servers:
        lines += [server_line(balancer, backend, server) for server in
                  sorted(backend.servers, key=lambda s: s.name)]
    return Section(f"backend {backend.name}", lines)


def address(server: Server) -> str:
    """``ADDRESS:PORT`` as HAProxy reads it (an IPv6 address needs no brackets)."""
    return f"{server.address}:{server.port}"


def server_params(balancer: Balancer, backend: Backend, server: Server) -> str:
    """The parameters of ``server``'s line: the same in the file and in ``add server``."""
    params = []
    if server.draining:
        params.append("weight 0")
    check = backend.check
    if check is not None:
        params.append(f"check port {check.port} inter {check.interval_ms}ms "
                      f"rise {check.rise} fall {check.fall}")
    if balancer.stickiness is not None and backend.protocol == "http":
        params.append(f"cookie {server.name}")
    return " ".join(params)


def server_line(balancer: Balancer, backend: Backend, server: Server) -> str:
    params = server_params(balancer, backend, server)
    return f"server {server.name} {address(server)}" + (f" {params}" if params else "")


def dump(config: Iterable[Section]) -> str:
    blocks = [section.header + "".join(f"\n    {line}" for line in section.lines)
              for section in config]
    return "\n\n".join(blocks) + "\n"


# --- custom text --------------------------------------------------------------------------


def parse_sections(text: str) -> list[Section]:
    """Split HAProxy text into sections; ValueError naming the line of anything that is not
    in a section (a line before the first header, an unindented line that is no section
    keyword). Comments and blank lines are dropped."""
    out: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword = line.split()[0]
        if keyword in SECTION_KEYWORDS:
            out.append(Section(" ".join(line.split())))
        elif not raw[0].isspace():
            raise ValueError(f"line {number}: {keyword!r} is not a section keyword ("
                             f"{', '.join(sorted(SECTION_KEYWORDS))}); indent the lines of a "
                             "section")
        elif not out:
            raise ValueError(f"line {number}: {line!r} comes before any section (global, "
                             "defaults, frontend NAME, backend NAME, ...)")
        else:
            out[-1].lines.append(line)
    return out


def line_key(line: str) -> str | None:
    """What a line sets when it can be set once in a section (``timeout client``,
    ``option httplog`` and ``no option httplog``, ``maxconn``); None for a line that adds."""
    words = line.split()
    if words[0] == "no" and len(words) > 2 and words[1] == "option":
        return f"option {words[2]}"
    if words[0] in ("option", "timeout") and len(words) > 1:
        return f"{words[0]} {words[1]}"
    if words[0] == "tcp-request" and len(words) > 1 and words[1] == "inspect-delay":
        return "tcp-request inspect-delay"
    return words[0] if words[0] in SINGLE_VALUED else None


def merge_custom(generated: str | list[Section], custom: str) -> str:
    """``generated`` with ``custom`` merged in, section by section: the lines of a custom
    section named like a generated one go into it, a line setting a single-valued keyword
    (:func:`line_key`) in place of the generated line, any other line before the section's
    routing (``use_backend``, ``default_backend``, ``server``); custom sections of new names
    are appended. ValueError (naming the line) when ``custom`` is not section-structured."""
    base = parse_sections(generated) if isinstance(generated, str) else \
        [Section(s.header, list(s.lines)) for s in generated]
    extra = parse_sections(custom)
    by_key = {section.key: section for section in base}
    for section in extra:
        target = by_key.get(section.key)
        if target is None:
            target = Section(section.header)
            base.append(target)
            by_key[section.key] = target
        for line in section.lines:
            _merge_line(target, line)
    return dump(base)


def _merge_line(section: Section, line: str) -> None:
    key = line_key(line)
    if key is not None:
        for i, existing in enumerate(section.lines):
            if line_key(existing) == key:
                section.lines[i] = line
                return
    at = next((i for i, existing in enumerate(section.lines)
               if existing.split()[0] in _ROUTING), len(section.lines))
    section.lines.insert(at, line)
