"""Which address reaches an instance, as real clouds list them (REAL-CLOUDS.md)."""

from __future__ import annotations

from chalicelib import addresses


def fixed(addr: str, version: int = 4) -> dict:
    return {"addr": addr, "version": version, "OS-EXT-IPS:type": "fixed"}


def floating(addr: str) -> dict:
    return {"addr": addr, "version": 4, "OS-EXT-IPS:type": "floating"}


def test_nova_addresses_are_typed_with_their_network():
    found = addresses.typed({"private": [fixed("10.0.0.5"), floating("203.0.113.7")], "v6": [fixed("2001:db8::5", 6)]})
    assert [(a.addr, a.type, a.family, a.network) for a in found] == [
        ("10.0.0.5", "fixed", "ipv4", "private"),
        ("203.0.113.7", "floating", "ipv4", "private"),
        ("2001:db8::5", "fixed", "ipv6", "v6"),
    ]


def test_a_floating_ip_is_the_one_to_reach():
    found = addresses.typed({"private": [fixed("10.0.0.5"), floating("203.0.113.7")]})
    assert addresses.access_ip(found) == "203.0.113.7"


def test_a_public_fixed_address_beats_a_private_one_whatever_the_order():
    found = addresses.typed({"internal": [fixed("192.168.1.4")], "Ext-Net": [fixed("51.68.1.20")]})
    assert addresses.access_ip(found) == "51.68.1.20"


def test_the_preferred_family_first_and_ipv6_only_still_reachable():
    both = addresses.typed({"Ext-Net": [fixed("2001:41d0::1", 6), fixed("51.68.1.20")]})
    assert addresses.access_ip(both) == "51.68.1.20"
    assert addresses.access_ip(both, family=addresses.IPV6) == "2001:41d0::1"
    assert addresses.access_ip(addresses.typed({"ext-v6only1": [fixed("2001:1600::9", 6)]})) == "2001:1600::9"


def test_no_address_is_none():
    assert addresses.access_ip(addresses.typed({})) is None
    assert addresses.access_ip(addresses.typed(None)) is None
