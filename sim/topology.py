"""Network layouts and security-group rules: pure functions of configuration, no state, no I/O.

A layout decides which networks a provider has and which of them give servers an address a
client can connect to ("reachable": a loopback address with a listener behind it, see
sim.listeners). The rule matcher decides whether a security group admits a connection.
"""

from __future__ import annotations

import ipaddress
from typing import Any

# Neutron protocol spellings that mean TCP in a rule; None means "any protocol".
_TCP = (None, "tcp", "6")


def _net(name: str, *, external: bool, shared: bool, reachable: bool, v4: bool = True, v6: bool = True) -> dict:
    return {"name": name, "external": external, "shared": shared, "reachable": reachable, "v4": v4, "v6": v6}


def layout_networks(layout: str) -> list[dict[str, Any]]:
    """The networks a layout starts with, in listing order."""
    if layout == "floating":
        # Cleura/OTC-like: a tenant network with private addresses, reached only through a
        # floating IP from the external network (which a server cannot be attached to).
        return [
            _net("private", external=False, shared=False, reachable=False, v6=False),
            _net("public", external=True, shared=False, reachable=False, v6=False),
        ]
    if layout == "multi":
        # OVH/Infomaniak-like: a public network plus a private one, so "any network" is ambiguous.
        return [
            _net("public", external=True, shared=True, reachable=True),
            _net("private", external=False, shared=False, reachable=False, v6=False),
        ]
    if layout == "ipv6":
        return [_net("public", external=True, shared=True, reachable=True, v4=False)]
    return [_net("public", external=True, shared=True, reachable=True)]


def merge_networks(layout: str, configured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Layout networks, with configured attributes (e.g. an id) merged by name, then extra networks.

    Extra networks from a scenario are private tenant networks: listed, attachable, not reachable.
    """
    nets = layout_networks(layout)
    by_name = {n["name"]: n for n in nets}
    for raw in configured:
        if raw["name"] in by_name:
            by_name[raw["name"]].update({k: v for k, v in raw.items() if k not in ("reachable", "v4", "v6")})
        else:
            extra = _net(raw["name"], external=False, shared=True, reachable=False)
            extra.update(raw)
            nets.append(extra)
            by_name[raw["name"]] = extra
    return nets


def available_for_auto(networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Nova may pick when no network is named: the project's own and shared networks.

    Nova lists the project's networks plus shared ones; an external network that is not shared
    is never a candidate (nova.network.neutron._get_available_networks).
    """
    return [n for n in networks if n["shared"] or not n["external"]]


def rule_admits(rule: dict[str, Any], family: int, port: int, peer: str) -> bool:
    """Whether one Neutron security-group rule lets ``peer`` reach tcp/``port`` over ``family``."""
    if rule["direction"] != "ingress" or rule["ethertype"] != ("IPv4" if family == 4 else "IPv6"):
        return False
    protocol = rule.get("protocol")
    if (protocol.lower() if isinstance(protocol, str) else protocol) not in _TCP:
        return False
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if low is not None and port < low or high is not None and port > high:
        return False
    if rule.get("remote_group_id") is not None:
        return False  # "from members of that group": never an outside client
    prefix = rule.get("remote_ip_prefix")
    if prefix is None:
        return True
    # An IPv6 face is served over IPv4 loopback; compare its client in the IPv4-mapped form.
    address = ipaddress.ip_address(peer if family == 4 else f"::ffff:{peer}")
    network = ipaddress.ip_network(prefix, strict=False)
    return network.version == address.version and address in network
