"""Load balancer payloads (``shared.lb``): what parses, and every way a payload is refused
with a sentence naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared import protocol
from shared.errors import ErrorCode, InstructionError, ProtocolError
from shared.lb import MAX_BALANCERS, MAX_SERVERS, LbApply
from shared.lb_report import MAX_MESSAGE, LbResult, LbState, trim_message

GOLDEN = Path(__file__).parents[2] / "data" / "instructions" / "lb_apply.json"


def payload() -> dict[str, Any]:
    return copy.deepcopy(json.loads(GOLDEN.read_text()))


def refused(data: object) -> str:
    with pytest.raises(InstructionError) as caught:
        LbApply.parse(data)
    assert caught.value.code is ErrorCode.INVALID_DATA
    return str(caught.value)


def rule(**fields: object) -> dict[str, Any]:
    return {"sourcePort": 80, "protocol": "http", "backend": "web_80_http", **fields}


def with_rules(*rules: dict[str, Any]) -> dict[str, Any]:
    data = payload()
    data["balancers"][0]["rules"] = list(rules)
    return data


def test_the_golden_payload_is_typed_to_the_leaves() -> None:
    request = LbApply.parse(payload())
    balancer = request.balancers[0]
    assert balancer.rules[0].hostname == "shop.example.com"
    assert balancer.backend("api_8080_http").servers[1].draining
    assert balancer.backend("api_8080_http").check is not None
    assert balancer.stickiness is not None and balancer.stickiness.cookie == "SRVID"
    assert balancer.default_certificate == "1c4"


def test_a_certificate_never_prints_its_key() -> None:
    balancer = LbApply.parse(payload()).balancers[0]
    assert "PRIVATE KEY" not in repr(balancer)


def test_missing_lists_read_as_empty_and_nothing_is_stopping_everything() -> None:
    assert LbApply.parse({}) == LbApply()
    data = payload()
    for key in ("rules", "backends", "certificates", "stickiness", "customConfig",
                "defaultCertificate"):
        del data["balancers"][0][key]
    balancer = LbApply.parse(data).balancers[0]
    assert (balancer.rules, balancer.custom_config, balancer.stickiness) == ((), "", None)


def test_of_names_the_payload_by_a_digest_of_its_balancers() -> None:
    balancers = LbApply.parse(payload()).balancers
    assert LbApply.of(balancers).version == LbApply.of(balancers).version
    assert LbApply.of(balancers).version != LbApply.of(()).version
    assert LbApply.parse(LbApply.of(balancers).dump()) == LbApply.of(balancers)


@pytest.mark.parametrize(("data", "message"), [
    (with_rules(rule(protocol="udp")),
     "data.balancers[0].rules[0].protocol udp cannot be balanced by HAProxy"),
    (with_rules(rule(protocol="quic")),
     "data.balancers[0].rules[0].protocol must be one of http, https, tcp, tls, sni"),
    (with_rules(rule(), rule(protocol="tcp", backend="db_5432_tcp")),
     "data.balancers[0].rules[1]: port 80 is both http and tcp; one port takes one protocol"),
    (with_rules(rule(), rule(protocol="https")),
     "data.balancers[0].rules[1]: port 80 is both http and https"),
    (with_rules(rule(backend="nowhere")),
     "data.balancers[0].rules[0].backend nowhere is not one of the backends"),
    (with_rules(rule(protocol="tcp")),
     "a tcp rule needs a tcp backend, and web_80_http is http"),
    (with_rules(rule(sourcePort=0)), "data.balancers[0].rules[0].sourcePort must be a port"),
    (with_rules(rule(sourcePort="80")),
     "data.balancers[0].rules[0].sourcePort must be an integer"),
    (with_rules(rule(hostname="bad host")), "hostname must be a host name"),
    (with_rules(rule(hostname="a.*.com")), "hostname must be a host name"),
    (with_rules(rule(path="api")), "path must start with /"),
    (with_rules(rule(protocol="tcp", backend="db_5432_tcp", hostname="a.com")),
     "hostname cannot be matched on a tcp port"),
    (with_rules(rule(protocol="sni", backend="db_5432_tcp", path="/x")),
     "path can only be matched on an http or https port"),
    (with_rules(rule(priority=-1)), "priority must be between 0 and"),
])
def test_bad_rules_are_refused(data: dict[str, Any], message: str) -> None:
    assert message in refused(data)


def test_a_tls_port_needs_a_certificate() -> None:
    data = with_rules(rule(protocol="tls", backend="db_5432_tcp"))
    data["balancers"][0]["certificates"] = []
    data["balancers"][0]["defaultCertificate"] = None
    assert "a tls port needs a certificate" in refused(data)


def edited(path: list[Any], value: object) -> dict[str, Any]:
    data = payload()
    target: Any = data["balancers"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(("data", "message"), [
    (edited(["uuid"], "a b"), "data.balancers[0].uuid must be at most 64 letters"),
    (edited(["configVersion"], ""), "data.balancers[0].configVersion must be a non-empty"),
    (edited(["bindAddress"], "0.0.0.300"), "bindAddress must be an IPv4 or IPv6 address"),
    (edited(["backends", 0, "protocol"], "udp"), "backends[0].protocol must be one of"),
    (edited(["backends", 0, "name"], "a b"), "backends[0].name must be at most 64"),
    (edited(["backends", 1, "name"], "api_8080_http"),
     "data.balancers[0].backends[1] repeats the backend name api_8080_http"),
    (edited(["backends", 0, "servers", 1, "name"], "shop-api-1"),
     "backends[0].servers[1] repeats the server name shop-api-1"),
    (edited(["backends", 0, "servers", 0, "address"], "shop-api"),
     "servers[0].address must be an IPv4 or IPv6 address"),
    (edited(["backends", 0, "servers", 0, "draining"], "yes"), "draining must be true or"),
    (edited(["backends", 0, "check", "requestLine"], "GET"), "requestLine must be one line"),
    (edited(["backends", 0, "check", "interval"], 0), "check.interval must be between 1"),
    (edited(["backends", 0, "servers"], [{"name": f"s{i}", "address": "10.0.0.1", "port": 1}
                                         for i in range(MAX_SERVERS + 1)]),
     f"servers must hold at most {MAX_SERVERS} servers"),
    (edited(["certificates", 0, "name"], ".hidden"), "certificates[0].name must be at most"),
    (edited(["certificates", 0, "pem"], "not a pem"), "certificates[0].pem must be a PEM"),
    (edited(["certificates", 0, "pem"], "-----BEGIN" + "x" * 70_000),
     "certificates[0].pem must be a PEM bundle of at most 65536 bytes"),
    (edited(["defaultCertificate"], "1c9"), "defaultCertificate 1c9 is not one of its"),
    (edited(["stickiness", "mode"], "sticky"), "stickiness.mode must be one of rewrite"),
    (edited(["stickiness", "cookie"], "a b"), "stickiness.cookie must be at most 64"),
    (edited(["customConfig"], "x" * 70_000), "customConfig must be at most 65536"),
    (edited(["customConfig"], 5), "customConfig must be a string or null"),
])
def test_bad_balancers_are_refused(data: dict[str, Any], message: str) -> None:
    assert message in refused(data)


def test_too_many_balancers_or_the_same_twice_are_refused() -> None:
    one = payload()["balancers"][0]
    many = {"balancers": [{**one, "uuid": f"b{i}"} for i in range(MAX_BALANCERS + 1)]}
    assert f"balancers must hold at most {MAX_BALANCERS} balancers" in refused(many)
    assert "data.balancers[1] repeats the balancer uuid" in refused(
        {"balancers": [one, one]})


def test_a_payload_that_is_no_object_is_refused() -> None:
    assert refused([]) == "data must be a JSON object"


# --- results ------------------------------------------------------------------------------


def test_a_result_round_trips() -> None:
    result = LbResult("9f3a", LbState.ERROR, "v1", "unknown keyword", 42)
    assert LbResult.parse(result.dump()) == result


@pytest.mark.parametrize(("obj", "message"), [
    ({"uuid": "9f3a", "state": "sleeping"}, "state must be one of starting, running"),
    ({"uuid": "9f3a", "state": "running", "pid": 0}, "pid must be a positive integer"),
    ({"uuid": "9f3a", "state": "error", "message": "m" * (MAX_MESSAGE + 1)},
     f"message must be at most {MAX_MESSAGE}"),
    ({"state": "running"}, "uuid must be a non-empty string"),
])
def test_bad_results_are_protocol_errors(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        LbResult.parse(obj)


def test_a_report_of_the_largest_results_fits_its_frame_limit() -> None:
    largest = LbResult("u" * 64, LbState.STARTING, "v" * 64, "m" * MAX_MESSAGE, 2**31)
    text = protocol.dump(protocol.LbReport(results=[largest.dump()] *
                                           protocol.MAX_LB_RESULTS))
    assert protocol.frame_size(text) <= protocol.frame_limit("lbReport")
    assert protocol.MAX_LB_RESULTS >= MAX_BALANCERS


def test_a_report_of_too_many_results_is_refused() -> None:
    text = json.dumps({"type": "lbReport", "results": [{}] * (protocol.MAX_LB_RESULTS + 1)})
    with pytest.raises(ProtocolError, match="send several reports"):
        protocol.parse(text)


def test_haproxy_output_becomes_its_alerts_without_their_prefixes_and_summary() -> None:
    output = ("[NOTICE]   (1) : haproxy version is 2.6.12\n"
              "[ALERT]    (1) : config : parsing [haproxy.cfg:9] : unknown keyword 'x'\n"
              "[ALERT]    (1) : config : Error(s) found in configuration file : haproxy.cfg\n"
              "[ALERT]    (1) : config : Fatal errors found in configuration.\n")
    assert trim_message(output) == "parsing [haproxy.cfg:9] : unknown keyword 'x'"
    # A summary with no alert before it is all there is to say.
    assert trim_message("[ALERT]    (1) : config : Fatal errors found in configuration.") == \
        "Fatal errors found in configuration."
    assert trim_message("just this") == "just this"
    assert len(trim_message("[ALERT] " + "x" * 5000)) == MAX_MESSAGE
