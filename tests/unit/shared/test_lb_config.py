"""The rendered ``haproxy.cfg`` of balancers (``shared.haproxy_config``): golden files for each
kind of rule, Rancher's rule order, and the merge of custom text.

Set ``CORRAL_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change; the
integration test ``tests/e2e/test_haproxy_agent.py`` checks each with ``haproxy -c``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.haproxy_config import (
    Paths,
    line_key,
    merge_custom,
    ordered,
    parse_sections,
    rank,
    render,
    render_without_servers,
)
from shared.lb import (
    Backend,
    BackendCheck,
    Balancer,
    Certificate,
    PortRule,
    Server,
    Stickiness,
)

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "data" / "haproxy"
GOLDEN_BASE = "/var/lib/corral/lb/golden"
PATHS = Paths.under(GOLDEN_BASE)


def certificate_pem(common_name: str) -> str:
    """A self-signed certificate and its key, one PEM bundle as HAProxy loads it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())).decode()


def servers(*names: str, draining: tuple[str, ...] = ()) -> tuple[Server, ...]:
    return tuple(Server(name, f"10.42.0.{i + 10}", 8080, draining=name in draining)
                 for i, name in enumerate(names))


WEB = Backend("web", "http", servers("web_1", "web_2"))
API = Backend("api", "http", servers("api_1"))
DOCS = Backend("docs", "http", servers("docs_1"))
DB = Backend("db", "tcp", servers("db_1", "db_2"))
FAKE_PEM = "-----BEGIN CERTIFICATE-----\n(test)\n-----END CERTIFICATE-----\n"


def lb(*rules: PortRule, backends: tuple[Backend, ...] = (WEB,), **kw: object) -> Balancer:
    return Balancer(uuid="golden", name="golden", config_version="1", rules=rules,
                    backends=backends, **kw)  # type: ignore[arg-type]


EXAMPLES: dict[str, Balancer] = {
    "plain_http": lb(PortRule(80, "http", "web")),
    "rancher_order": lb(
        PortRule(80, "http", "web"),
        PortRule(80, "http", "docs", path="/docs"),
        PortRule(80, "http", "api", hostname="*.example.com"),
        PortRule(80, "http", "api", hostname="*.example.com", path="/v1"),
        PortRule(80, "http", "web", hostname="www.example.com"),
        PortRule(80, "http", "api", hostname="www.example.com", path="/api"),
        PortRule(80, "http", "api", hostname="www.example.com", path="/api/v2"),
        PortRule(80, "http", "docs", hostname="example.*"),
        PortRule(80, "http", "docs", hostname="first.example.org", priority=1),
        PortRule(80, "http", "web", path="/static", priority=2),
        backends=(WEB, API, DOCS)),
    "https_sni": lb(
        PortRule(443, "https", "web", hostname="www.example.com"),
        PortRule(443, "https", "api", hostname="api.example.com"),
        PortRule(80, "http", "web"),
        backends=(WEB, API),
        certificates=(Certificate("www", FAKE_PEM), Certificate("api", FAKE_PEM)),
        default_certificate="www"),
    "sni_passthrough": lb(
        PortRule(8443, "sni", "db", hostname="db.example.com"),
        PortRule(8443, "sni", "db", hostname="*.db.example.com"),
        backends=(DB,)),
    "tcp": lb(PortRule(5432, "tcp", "db"), backends=(DB,), bind_address="192.168.1.20"),
    "stickiness": lb(
        PortRule(80, "http", "web"),
        backends=(Backend("web", "http", servers("web_1", "web_2"),
                          BackendCheck(8080, "GET /healthz HTTP/1.0", 5000, 1000, 3, 2)),),
        stickiness=Stickiness(cookie="SRVID", mode="insert", indirect=True, nocache=True,
                              domain=".example.com")),
    "custom_merged": lb(
        PortRule(80, "http", "web"),
        custom_config=(
            "# tuned for long polls\n"
            "global\n"
            "    maxconn 20000\n"
            "defaults\n"
            "    timeout client 5m\n"
            "    timeout server 5m\n"
            "frontend 80\n"
            "    http-request set-header X-Served-By corral\n"
            "    use_backend web if { path_beg /ws }\n"
            "backend web\n"
            "    balance leastconn\n"
            "listen stats\n"
            "    bind 127.0.0.1:9000\n"
            "    mode http\n"
            "    stats enable\n")),
    "draining": lb(PortRule(80, "http", "web"),
                   backends=(Backend("web", "http",
                                     servers("web_1", "web_2", "web_3", draining=("web_2",)),
                                     BackendCheck(8080)),)),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_balancer_renders_as_its_golden_file(name: str) -> None:
    text = render(EXAMPLES[name], PATHS)
    golden = GOLDEN_DIR / f"{name}.cfg"
    if os.environ.get("CORRAL_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_every_golden_file_has_an_example() -> None:
    assert {p.stem for p in GOLDEN_DIR.glob("*.cfg")} == set(EXAMPLES)


def test_rendering_is_deterministic_whatever_the_order_backends_come_in() -> None:
    balancer = EXAMPLES["rancher_order"]
    shuffled = replace(balancer, backends=balancer.backends[::-1])
    assert render(shuffled, PATHS) == render(balancer, PATHS)


def test_rules_without_priority_follow_rancher_order() -> None:
    rules = [PortRule(80, "http", "d"), PortRule(80, "http", "p", path="/p"),
             PortRule(80, "http", "w", hostname="*.a.com"),
             PortRule(80, "http", "wp", hostname="*.a.com", path="/x"),
             PortRule(80, "http", "h", hostname="a.com"),
             PortRule(80, "http", "hp", hostname="a.com", path="/x")]
    assert [r.backend for r in ordered(rules)] == ["hp", "h", "wp", "w", "p", "d"]
    assert [rank(r) for r in ordered(rules)] == [0, 1, 2, 3, 4, 5]


def test_a_lower_priority_goes_first_then_rancher_order() -> None:
    rules = [PortRule(80, "http", "host", hostname="a.com"),
             PortRule(80, "http", "late", priority=5),
             PortRule(80, "http", "first", path="/x", priority=1),
             PortRule(80, "http", "also5", hostname="b.com", priority=5)]
    assert [r.backend for r in ordered(rules)] == ["first", "also5", "late", "host"]


def test_a_longer_path_goes_before_its_prefix_and_equal_rules_keep_their_order() -> None:
    rules = [PortRule(80, "http", "a", path="/api"), PortRule(80, "http", "b", path="/api/v2"),
             PortRule(80, "http", "c", path="/zz"), PortRule(80, "http", "d", path="/yy")]
    assert [r.backend for r in ordered(rules)] == ["b", "a", "c", "d"]


def test_host_matching_ignores_the_port_and_wildcards_match_ends() -> None:
    text = render(EXAMPLES["rancher_order"], PATHS)
    assert "{ req.hdr(host),field(1,:) -m str -i www.example.com }" in text
    assert "{ req.hdr(host),field(1,:) -m end -i .example.com }" in text
    assert "{ req.hdr(host),field(1,:) -m beg -i example. }" in text


def test_only_the_first_default_rule_is_the_default_backend() -> None:
    text = render(lb(PortRule(80, "http", "web"), PortRule(80, "http", "api"),
                     backends=(WEB, API)), PATHS)
    assert text.count("default_backend") == 1 and "default_backend web" in text


def test_the_default_certificate_is_loaded_first_and_the_others_by_sni() -> None:
    text = render(EXAMPLES["https_sni"], PATHS)
    assert (f"bind *:443 ssl crt {GOLDEN_BASE}/certs/default/www.pem "
            f"crt {GOLDEN_BASE}/certs/sni/") in text


def test_a_draining_server_gets_weight_zero() -> None:
    text = render(EXAMPLES["draining"], PATHS)
    assert "server web_2 10.42.0.11:8080 weight 0 check" in text
    assert "server web_1 10.42.0.10:8080 check" in text


def test_without_servers_two_balancers_differing_in_servers_only_render_alike() -> None:
    one = EXAMPLES["stickiness"]
    other = replace(one, backends=(
        Backend("web", "http", servers("x", draining=("x",)), one.backends[0].check),))
    assert render(one, PATHS) != render(other, PATHS)
    assert render_without_servers(one, PATHS) == render_without_servers(other, PATHS)
    assert "\n    server " not in render_without_servers(one, PATHS)


# --- merge --------------------------------------------------------------------------------

GENERATED = """global
    maxconn 4096

defaults
    timeout client 60s
    option redispatch

frontend 80
    bind *:80
    mode http
    use_backend api if { path_beg /api }
    default_backend web

backend web
    mode http
    balance roundrobin
    server a 10.0.0.1:80
"""


def test_a_custom_line_of_a_single_valued_keyword_replaces_the_generated_one() -> None:
    merged = merge_custom(GENERATED, "defaults\n  timeout client 5m\nbackend web\n"
                                     "  balance leastconn\nglobal\n  maxconn 100\n")
    assert "timeout client 5m" in merged and "timeout client 60s" not in merged
    assert "balance leastconn" in merged and "roundrobin" not in merged
    assert "maxconn 100" in merged and "4096" not in merged


def test_no_option_replaces_the_option() -> None:
    merged = merge_custom(GENERATED, "defaults\n    no option redispatch\n")
    assert "no option redispatch" in merged
    assert merged.count("option redispatch") == 1


def test_other_custom_lines_are_added_before_the_sections_routing() -> None:
    merged = merge_custom(GENERATED, "frontend 80\n    acl admin path_beg /admin\n"
                                     "    use_backend admin if admin\n")
    section = next(s for s in parse_sections(merged) if s.header == "frontend 80")
    assert section.lines == ["bind *:80", "mode http", "acl admin path_beg /admin",
                             "use_backend admin if admin",
                             "use_backend api if { path_beg /api }", "default_backend web"]


def test_custom_sections_of_new_names_are_appended_in_their_order() -> None:
    merged = merge_custom(GENERATED, "backend admin\n    server x 10.0.0.9:80\n"
                                     "listen stats\n    bind :9000\n")
    headers = [s.header for s in parse_sections(merged)]
    assert headers == ["global", "defaults", "frontend 80", "backend web", "backend admin",
                       "listen stats"]


def test_section_names_match_whatever_the_spacing() -> None:
    merged = merge_custom(GENERATED, "backend    web\n    timeout server 1m\n")
    assert [s.header for s in parse_sections(merged)].count("backend web") == 1


def test_comments_and_blank_lines_are_dropped() -> None:
    assert merge_custom(GENERATED, "# nothing\n\n   \n") == GENERATED


def test_a_line_before_any_section_is_refused_with_its_number() -> None:
    with pytest.raises(ValueError, match=r"line 2: 'timeout client 5m' comes before any "):
        merge_custom(GENERATED, "# comment\n    timeout client 5m\ndefaults\n")


def test_an_unknown_section_keyword_is_refused_with_its_number() -> None:
    with pytest.raises(ValueError, match=r"line 3: 'fronted' is not a section keyword"):
        merge_custom(GENERATED, "defaults\n    timeout client 5m\nfronted 80\n    x\n")


def test_a_balancer_with_unstructured_custom_text_does_not_render() -> None:
    with pytest.raises(ValueError, match="line 1"):
        render(lb(PortRule(80, "http", "web"), custom_config="maxconn 10\n"), PATHS)


@pytest.mark.parametrize(("line", "key"), [
    ("timeout client 5m", "timeout client"), ("option httplog", "option httplog"),
    ("no option httplog", "option httplog"), ("maxconn 10", "maxconn"),
    ("tcp-request inspect-delay 2s", "tcp-request inspect-delay"),
    ("http-request set-header A b", None), ("acl a path_beg /", None),
    ("server x 1.2.3.4:80", None)])
def test_line_keys(line: str, key: str | None) -> None:
    assert line_key(line) == key
