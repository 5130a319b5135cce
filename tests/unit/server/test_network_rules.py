"""The pure network rules: subnets read as Rancher reads them, policy rules, VXLAN options and
overlaps, each refusal a 422 with Rancher's code."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

import pytest

from server.api.errors import ValidationError
from server.resources import network_rules as rules


def test_a_subnet_takes_its_size_from_the_address_and_defaults_its_addresses() -> None:
    assert rules.parse_subnet({"networkAddress": "10.43.0.0/16", "cidrSize": 24}) == {
        "networkAddress": "10.43.0.0", "cidrSize": 16, "gateway": "10.43.0.1",
        "startAddress": "10.43.0.2", "endAddress": "10.43.255.254"}
    assert rules.parse_subnet({"networkAddress": "10.1.2.0"})["cidrSize"] == 24
    given = rules.parse_subnet({"networkAddress": "10.1.2.0", "cidrSize": 24, "name": "a",
                                "gateway": "10.1.2.254", "startAddress": "10.1.2.10",
                                "endAddress": "10.1.2.20"})
    assert (given["gateway"], given["startAddress"], given["endAddress"], given["name"]) == \
        ("10.1.2.254", "10.1.2.10", "10.1.2.20", "a")


@pytest.mark.parametrize(("raw", "code"), [
    ("10.0.0.0/8", "InvalidFormat"),
    ({"networkAddress": "10.0.0.0", "cidrSize": "8"}, "InvalidFormat"),
    ({"networkAddress": "10.0.0.0/29"}, "MaxLimitExceeded"),
    ({"networkAddress": "10.1.2.0", "startAddress": "10.1.2.9", "endAddress": "10.1.2.8"},
     "InvalidOption"),
    ({"networkAddress": "10.1.2.0", "endAddress": "nowhere"}, "InvalidFormat"),
    ({"networkAddress": "10.1.2.0", "vlan": 3}, "InvalidOption"),
])
def test_a_bad_subnet_is_refused_with_rancher_codes(raw: Any, code: str) -> None:
    with pytest.raises(ValidationError) as error:
        rules.parse_subnet(raw)
    assert (error.value.code, error.value.field_name) == (code, "subnets")


def test_overlaps_name_the_network_they_hit() -> None:
    taken = [rules.Range(IPv4Network("10.42.0.0/16"), "network managed")]
    rules.check_no_overlap([IPv4Network("10.43.0.0/16")], taken, "subnets")
    with pytest.raises(ValidationError, match="of network managed"):
        rules.check_no_overlap([IPv4Network("10.42.128.0/17")], taken, "subnets")


def test_policy_rules_are_objects_or_their_json_text() -> None:
    assert rules.parse_policy(None) is None
    assert rules.parse_policy(['{"within": "stack", "action": "allow"}',
                               {"action": "deny", "from": {"selector": "a=b"}}]) == [
        {"within": "stack", "action": "allow"}, {"action": "deny", "from": {"selector": "a=b"}}]
    with pytest.raises(ValidationError) as error:
        rules.parse_policy([{"action": "allow", "between": {"groupBy": 3}}])
    assert error.value.code == "InvalidFormat"


def test_vxlan_options_change_over_the_current_ones_and_keep_the_pool_valid() -> None:
    assert rules.parse_vxlan_options({}, {}) == rules.VXLAN_DEFAULTS
    changed = rules.parse_vxlan_options(rules.VXLAN_DEFAULTS, {"mtu": 1400})
    assert changed == {**rules.VXLAN_DEFAULTS, "mtu": 1400}
    # The prefix is checked against the pool it would cut.
    with pytest.raises(ValidationError) as error:
        rules.parse_vxlan_options(rules.VXLAN_DEFAULTS, {"subnetPool": "10.0.0.0/25"})
    assert (error.value.code, error.value.field_name) == ("InvalidOption", "networkMetadata")
    assert rules.pool_subnet(changed)["cidrSize"] == 16
