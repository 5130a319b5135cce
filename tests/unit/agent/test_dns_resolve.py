"""The discovery responder's rules, without sockets: which name answers, aliases, bare and
``service.stack`` names, CNAME chains, what is forwarded, NXDOMAIN and empty answers."""

from __future__ import annotations

from typing import Any

import pytest

from agent.dns.resolve import (
    EMPTY,
    FORWARD,
    MAX_CHAIN,
    TTL,
    Answer,
    Forward,
    Rcode,
    Record,
    Table,
    lookup,
    resolve,
)
from shared.discovery import DnsApply

CLIENT = "10.42.0.9"      # in stack s1, links db as "database"
STRANGER = "10.42.7.7"    # not in the table
WIRE: dict[str, Any] = {
    "version": "v1",
    "names": {
        "db.s1.rancher.internal": {"addresses": ["10.42.0.5", "10.42.1.6", "10.42.2.7"]},
        "web.s1.rancher.internal": {"addresses": []},
        "cache.s2.rancher.internal": {"addresses": ["10.42.3.3"]},
        "search.s1.rancher.internal": {"cname": "search.example.com"},
        "alias.s1.rancher.internal": {"cname": "db.s1.rancher.internal"},
        "hop.s1.rancher.internal": {"cname": "alias.s1.rancher.internal"},
        "dangling.s1.rancher.internal": {"cname": "gone.s1.rancher.internal"},
        "loop-a.s1.rancher.internal": {"cname": "loop-b.s1.rancher.internal"},
        "loop-b.s1.rancher.internal": {"cname": "loop-a.s1.rancher.internal"},
        "legacy.example.org": {"addresses": ["10.42.4.4"]},
    },
    "clients": {
        CLIENT: {"stack": "s1", "aliases": {"database": "db.s1.rancher.internal",
                                            "cache": "cache.s2.rancher.internal"}},
        "10.42.0.10": {"stack": None, "aliases": {}},
    },
}
TABLE = Table.of(DnsApply.parse(WIRE))
DB = ("10.42.0.5", "10.42.1.6", "10.42.2.7")


def keep(addresses: list[str]) -> None:
    """A shuffle that keeps the order, so that answers can be compared."""


def ask(name: str, qtype: str = "A", client: str = CLIENT, table: Table = TABLE) -> Any:
    return resolve(table, name, qtype, client, keep)


def a_records(owner: str, addresses: tuple[str, ...]) -> tuple[Record, ...]:
    return tuple(Record(owner, "A", address) for address in addresses)


def test_a_service_name_answers_its_addresses_for_anyone() -> None:
    for client in (CLIENT, STRANGER):
        assert ask("db.s1.rancher.internal", client=client) == Answer(
            Rcode.NOERROR, a_records("db.s1.rancher.internal", DB))


def test_names_are_lowercased_and_lose_their_trailing_dot() -> None:
    assert ask("DB.S1.Rancher.Internal.") == ask("db.s1.rancher.internal")


def test_a_bare_service_name_answers_from_the_clients_own_stack_only() -> None:
    assert ask("db") == Answer(Rcode.NOERROR, a_records("db", DB))
    assert ask("db", client=STRANGER) == FORWARD
    assert ask("db", client="10.42.0.10") == FORWARD  # known, but in no stack
    assert ask("cache") != ask("cache", client=STRANGER)  # cache is in s2: an alias answers


def test_service_dot_stack_answers_for_anyone() -> None:
    assert ask("cache.s2", client=STRANGER) == Answer(
        Rcode.NOERROR, a_records("cache.s2", ("10.42.3.3",)))
    assert ask("db.s1.") == Answer(Rcode.NOERROR, a_records("db.s1", DB))


def test_a_link_alias_answers_as_the_name_it_stands_for_under_its_own_name() -> None:
    assert ask("database") == Answer(Rcode.NOERROR, a_records("database", DB))
    assert ask("cache") == Answer(Rcode.NOERROR, a_records("cache", ("10.42.3.3",)))
    assert ask("database", client=STRANGER) == FORWARD


def test_a_link_alias_answers_under_the_search_domains_too() -> None:
    """Resolvers try ``database.s1.rancher.internal`` (the search list), and Docker's embedded
    DNS never relays the bare ``database``: the alias must answer there as well."""
    for name in ("database.s1.rancher.internal", "database.rancher.internal"):
        assert ask(name) == Answer(Rcode.NOERROR, a_records(name, DB))
        assert ask(name, client=STRANGER) == Answer(Rcode.NXDOMAIN)


def test_an_alias_wins_over_a_name_of_the_table() -> None:
    wire = {**WIRE, "clients": {CLIENT: {"stack": "s1", "aliases": {
        "legacy.example.org": "cache.s2.rancher.internal"}}}}
    table = Table.of(DnsApply.parse(wire))
    assert ask("legacy.example.org", table=table) == Answer(
        Rcode.NOERROR, a_records("legacy.example.org", ("10.42.3.3",)))
    assert ask("legacy.example.org", client=STRANGER, table=table) == Answer(
        Rcode.NOERROR, a_records("legacy.example.org", ("10.42.4.4",)))


def test_a_name_of_the_table_outside_the_zone_is_answered_not_forwarded() -> None:
    assert ask("legacy.example.org") == Answer(
        Rcode.NOERROR, a_records("legacy.example.org", ("10.42.4.4",)))


def test_names_under_the_zone_not_in_the_table_are_nxdomain_never_forwarded() -> None:
    for name in ("nope.s1.rancher.internal", "db.s9.rancher.internal", "x.db.s1.rancher.internal"):
        assert ask(name) == Answer(Rcode.NXDOMAIN)
        assert ask(name, "AAAA", STRANGER) == Answer(Rcode.NXDOMAIN)


def test_a_stack_or_the_zone_itself_exists_without_records() -> None:
    """Empty non-terminals are NOERROR, so that no resolver concludes nothing is below them."""
    assert ask("s1.rancher.internal") == Answer(Rcode.NOERROR)
    assert ask("rancher.internal") == Answer(Rcode.NOERROR)


def test_a_bare_name_is_not_tried_under_the_zone_twice() -> None:
    """``x.rancher.internal`` is looked up as it is, not as ``x.rancher.internal.s1...``."""
    assert lookup(TABLE, "s1.rancher.internal", CLIENT) is None


def test_other_names_are_forwarded() -> None:
    assert ask("example.com") == FORWARD
    assert ask("example.com", "MX", STRANGER) == FORWARD
    assert ask("nope") == FORWARD  # not a service of s1, nor nope.rancher.internal


def test_a_service_without_a_healthy_container_is_noerror_with_no_answer() -> None:
    assert ask("web.s1.rancher.internal") == Answer(Rcode.NOERROR)
    assert ask("web") == Answer(Rcode.NOERROR)


@pytest.mark.parametrize("qtype", ["AAAA", "MX", "TXT", "SRV"])
def test_other_record_types_of_our_names_are_noerror_with_no_answer(qtype: str) -> None:
    assert ask("db.s1.rancher.internal", qtype) == Answer(Rcode.NOERROR)


def test_any_answers_the_addresses() -> None:
    assert ask("db", "ANY") == ask("db", "A")


def test_a_cname_chain_is_followed_inside_the_table() -> None:
    assert ask("hop.s1.rancher.internal") == Answer(Rcode.NOERROR, (
        Record("hop.s1.rancher.internal", "CNAME", "alias.s1.rancher.internal"),
        Record("alias.s1.rancher.internal", "CNAME", "db.s1.rancher.internal"),
        *a_records("db.s1.rancher.internal", DB)))


def test_a_bare_name_that_is_a_cname_starts_its_chain_under_the_name_asked() -> None:
    assert ask("alias") == Answer(Rcode.NOERROR, (
        Record("alias", "CNAME", "db.s1.rancher.internal"),
        *a_records("db.s1.rancher.internal", DB)))


def test_a_cname_leaving_the_table_is_forwarded_for_its_target_with_the_chain() -> None:
    assert ask("search") == Forward("search.example.com", (
        Record("search", "CNAME", "search.example.com"),))
    assert ask("search.s1.rancher.internal", "AAAA") == Forward("search.example.com", (
        Record("search.s1.rancher.internal", "CNAME", "search.example.com"),))


def test_a_cname_question_answers_the_first_cname_alone() -> None:
    assert ask("hop.s1.rancher.internal", "CNAME") == Answer(Rcode.NOERROR, (
        Record("hop.s1.rancher.internal", "CNAME", "alias.s1.rancher.internal"),))
    assert ask("search", "CNAME") == Answer(Rcode.NOERROR, (
        Record("search", "CNAME", "search.example.com"),))


def test_a_cname_to_a_missing_name_of_the_zone_is_nxdomain_with_the_chain() -> None:
    assert ask("dangling.s1.rancher.internal") == Answer(Rcode.NXDOMAIN, (
        Record("dangling.s1.rancher.internal", "CNAME", "gone.s1.rancher.internal"),))


def test_a_cname_loop_is_servfail() -> None:
    assert ask("loop-a.s1.rancher.internal") == Answer(Rcode.SERVFAIL)


def test_chains_of_up_to_ten_cnames_are_followed_and_longer_ones_are_servfail() -> None:
    def chain(length: int) -> Table:
        names: dict[str, Any] = {f"c{i}.rancher.internal": {"cname": f"c{i + 1}.rancher.internal"}
                                 for i in range(length)}
        names[f"c{length}.rancher.internal"] = {"addresses": ["10.42.0.1"]}
        return Table.of(DnsApply.parse({"version": "v", "names": names}))

    ten = ask("c0.rancher.internal", table=chain(MAX_CHAIN))
    assert isinstance(ten, Answer) and ten.rcode is Rcode.NOERROR
    assert [r.kind for r in ten.records] == ["CNAME"] * 10 + ["A"]
    assert ask("c0.rancher.internal", table=chain(MAX_CHAIN + 1)) == Answer(Rcode.SERVFAIL)


def test_addresses_are_shuffled_for_every_answer() -> None:
    orders = set()
    for _ in range(200):
        outcome = resolve(TABLE, "db", "A", CLIENT)
        assert isinstance(outcome, Answer)
        assert sorted(r.value for r in outcome.records) == sorted(DB)
        orders.add(tuple(r.value for r in outcome.records))
    assert len(orders) > 1
    assert TABLE.names["db.s1.rancher.internal"].addresses == DB  # the table is untouched


def test_before_the_first_table_our_names_are_servfail_and_others_forwarded() -> None:
    assert not EMPTY.loaded
    assert ask("db.s1.rancher.internal", table=EMPTY) == Answer(Rcode.SERVFAIL)
    assert ask("db", table=EMPTY) == FORWARD
    assert ask("example.com", table=EMPTY) == FORWARD


def test_an_empty_table_is_loaded_and_authoritative() -> None:
    table = Table.of(DnsApply("v0"))
    assert ask("db.s1.rancher.internal", table=table) == Answer(Rcode.NXDOMAIN)


def test_answers_live_one_second() -> None:
    """Answers must follow changes within 2 s: nothing may be cached for longer than 1 s."""
    assert TTL == 1
