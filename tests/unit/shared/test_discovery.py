"""The ``dns.apply`` payload: its JSON round trip, its place in the instruction table, and every
way a table is refused (a request is invalidData for the agent, a reply a protocol error)."""

from __future__ import annotations

from typing import Any

import pytest

from shared import discovery
from shared.discovery import (
    RESOLVER_ADDRESS,
    DnsAnswer,
    DnsApplied,
    DnsApply,
    DnsClient,
    check_name,
)
from shared.errors import ErrorCode, InstructionError, ProtocolError
from shared.instructions import INSTRUCTIONS, parse_reply

WIRE: dict[str, Any] = {
    "version": "9c1e2f",
    "names": {
        "db.s1.rancher.internal": {"addresses": ["10.42.0.5", "10.42.1.7"]},
        "web.s1.rancher.internal": {"addresses": []},
        "search.s1.rancher.internal": {"cname": "search.example.com"},
    },
    "clients": {
        "10.42.0.9": {"stack": "s1", "aliases": {"database": "db.s1.rancher.internal"}},
        "10.42.1.3": {"stack": None, "aliases": {}},
    },
}


def test_a_table_parses_to_typed_answers_and_clients_and_dumps_back_key_for_key() -> None:
    table = DnsApply.parse(WIRE)
    assert table.version == "9c1e2f"
    assert table.names["db.s1.rancher.internal"] == DnsAnswer(("10.42.0.5", "10.42.1.7"))
    assert table.names["web.s1.rancher.internal"] == DnsAnswer()
    assert table.names["search.s1.rancher.internal"] == DnsAnswer(cname="search.example.com")
    assert table.clients["10.42.0.9"] == DnsClient("s1", {"database": "db.s1.rancher.internal"})
    assert table.dump() == WIRE


def test_missing_maps_and_a_client_without_a_stack_read_as_empty() -> None:
    assert DnsApply.parse({"version": "v"}) == DnsApply("v")
    assert DnsApply.parse({"version": "v", "names": None, "clients": {"10.42.0.2": {}}}) == \
        DnsApply("v", {}, {"10.42.0.2": DnsClient()})


def test_the_instruction_table_names_dns_apply_and_its_reply() -> None:
    assert INSTRUCTIONS["dns.apply"].request is DnsApply
    assert INSTRUCTIONS["dns.apply"].reply is DnsApplied
    assert not INSTRUCTIONS["dns.apply"].streaming
    assert parse_reply("dns.apply", {"version": "9c1e2f"}) == DnsApplied("9c1e2f")
    assert DnsApplied("9c1e2f").dump() == {"version": "9c1e2f"}


def test_the_resolver_address_is_ranchers() -> None:
    assert RESOLVER_ADDRESS == "169.254.169.250"


def with_names(names: dict[str, Any]) -> dict[str, Any]:
    return {"version": "v", "names": names}


def with_client(ip: str, client: Any) -> dict[str, Any]:
    return {**with_names({"db.s1.rancher.internal": {"addresses": []}}), "clients": {ip: client}}


@pytest.mark.parametrize(("data", "message"), [
    ({"names": {}}, "data.version must be a non-empty string"),
    ({"version": ""}, "data.version must be a non-empty string"),
    ({"version": 7}, "data.version must be a non-empty string"),
    ({"version": "v", "names": []}, "data.names must be a JSON object"),
    (with_names({"db.s1.rancher.internal": {}}),
     "data.names['db.s1.rancher.internal'] must have exactly one of addresses and cname"),
    (with_names({"db.s1.rancher.internal": {"addresses": [], "cname": "x.example.com"}}),
     "data.names['db.s1.rancher.internal'] must have exactly one of addresses and cname"),
    (with_names({"db": {"addresses": ["10.42.0.300"]}}),
     "data.names['db'].addresses[0] must be an IPv4 address like 10.42.0.5"),
    (with_names({"db": {"addresses": ["fd00::5"]}}),
     "data.names['db'].addresses[0] must be an IPv4 address like 10.42.0.5"),
    (with_names({"db": {"addresses": "10.42.0.5"}}),
     "data.names['db'].addresses must be a list of strings"),
    (with_names({"db": {"cname": "Bad Name"}}), "data.names['db'].cname must be a lowercase "
     "DNS name without a trailing dot (letters, digits, '-', '_'), not 'Bad Name'"),
    (with_names({"Db.s1.rancher.internal": {"addresses": []}}), "data.names key must be a "
     "lowercase DNS name"),
    (with_names({"db.s1.rancher.internal.": {"addresses": []}}), "data.names key must be a "
     "lowercase DNS name without a trailing dot"),
    (with_names({"-db.s1": {"addresses": []}}), "data.names key must be a lowercase DNS name"),
    (with_names({"a" * 64 + ".s1": {"addresses": []}}),
     "data.names key must be a DNS name whose labels have at most 63 characters"),
    (with_names({".".join(["a" * 63] * 4): {"addresses": []}}),
     "data.names key must be a DNS name of 1 to 253 characters"),
    (with_names({"db": "10.42.0.5"}), "data.names['db'] must be a JSON object"),
    (with_client("10.42.0.9/32", {}), "data.clients key must be an IPv4 address"),
    (with_client("10.42.0.9", {"stack": "S 1"}), "data.clients['10.42.0.9'].stack must be a "
     "lowercase DNS name"),
    (with_client("10.42.0.9", {"aliases": {"database": 5}}),
     "data.clients['10.42.0.9'].aliases must be a map of strings to strings"),
    (with_client("10.42.0.9", {"aliases": {"data base": "db.s1.rancher.internal"}}),
     "data.clients['10.42.0.9'].aliases must be a lowercase DNS name"),
    (with_client("10.42.0.9", {"aliases": {"database": "gone.s1.rancher.internal"}}),
     "data.clients['10.42.0.9'].aliases['database'] must name one of names, not "
     "'gone.s1.rancher.internal'"),
])
def test_a_malformed_table_is_invalid_data_naming_the_field(data: Any, message: str) -> None:
    with pytest.raises(InstructionError) as caught:
        DnsApply.parse(data)
    assert caught.value.code is ErrorCode.INVALID_DATA
    assert str(caught.value).startswith(message)


def test_the_limits_protect_the_agent_from_a_table_it_cannot_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "MAX_NAMES", 3)
    monkeypatch.setattr(discovery, "MAX_ADDRESSES", 1)
    monkeypatch.setattr(discovery, "MAX_ALIASES", 1)
    monkeypatch.setattr(discovery, "MAX_CLIENTS", 1)
    four = with_names({f"s{i}.rancher.internal": {"addresses": []} for i in range(4)})
    with pytest.raises(InstructionError, match=r"data\.names must have at most 3 entries, not 4"):
        DnsApply.parse(four)
    with pytest.raises(InstructionError, match=r"addresses must have at most 1 entries"):
        DnsApply.parse(with_names({"db": {"addresses": ["10.42.0.1", "10.42.0.2"]}}))
    with pytest.raises(InstructionError, match=r"aliases must have at most 1 entries"):
        DnsApply.parse(with_client("10.42.0.9", {"aliases": {
            "a": "db.s1.rancher.internal", "b": "db.s1.rancher.internal"}}))
    with pytest.raises(InstructionError, match=r"data\.clients must have at most 1 entries"):
        DnsApply.parse({"version": "v", "clients": {"10.42.0.1": {}, "10.42.0.2": {}}})


def test_the_default_limits_allow_a_hundred_thousand_names() -> None:
    assert discovery.MAX_NAMES == 100_000
    names = {f"s{i}.st.rancher.internal": {"addresses": ["10.42.0.1"]} for i in range(100_000)}
    assert len(DnsApply.parse(with_names(names)).names) == 100_000


def test_a_malformed_reply_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"the reply data of dns\.apply\.version must be a "
                                            r"non-empty string"):
        parse_reply("dns.apply", {})


@pytest.mark.parametrize("name", ["db", "db.s1.rancher.internal", "_sip._udp.example.com",
                                  "a-b.c9", "x" * 63, ".".join(["a" * 63] * 3 + ["b" * 61])])
def test_valid_names(name: str) -> None:
    assert check_name(name) is None
