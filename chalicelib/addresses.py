"""Which address reaches an instance: a server's addresses, typed (fixed or floating, IPv4 or
IPv6, and on which network), and the one to SSH to.

Real clouds differ (REAL-CLOUDS.md): some give a public fixed address, some only a private one
behind a floating IP, some IPv6 only or both. "The first address" broke when a cloud added IPv6,
so the choice goes by type and family: a floating address first, then a public fixed one, then
a private fixed one; within each, the preferred family first. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FIXED, FLOATING = "fixed", "floating"
# A provider's `floating_ip`: "auto" gives each instance one once its server is ACTIVE.
FLOATING_IP_NEVER, FLOATING_IP_AUTO = "never", "auto"
FLOATING_IP_MODES = (FLOATING_IP_NEVER, FLOATING_IP_AUTO)
IPV4, IPV6 = "ipv4", "ipv6"
FAMILIES = (IPV4, IPV6)


@dataclass(frozen=True)
class Address:
    addr: str
    version: int
    type: str  # FIXED or FLOATING
    network: str

    @property
    def family(self) -> str:
        return IPV6 if self.version == 6 else IPV4

    @property
    def public(self) -> bool:
        try:
            return ipaddress.ip_address(self.addr).is_global
        except ValueError:
            return False

    def as_dict(self) -> dict:
        return {"addr": self.addr, "version": self.version, "type": self.type, "network": self.network}


def typed(nova_addresses: Mapping[str, Iterable[Mapping]] | None) -> tuple[Address, ...]:
    """Nova's `addresses` ({network: [{"addr", "version", "OS-EXT-IPS:type"}, ...]}) as Addresses."""
    found = []
    for network, entries in (nova_addresses or {}).items():
        for entry in entries or ():
            if not entry.get("addr"):
                continue
            kind = FLOATING if entry.get("OS-EXT-IPS:type") == FLOATING else FIXED
            found.append(Address(str(entry["addr"]), 6 if entry.get("version") == 6 else 4, kind, network))
    return tuple(found)


def access_ip(addresses: Iterable[Address], family: str = IPV4) -> str | None:
    """The address to SSH to (see the module's order), or None when there is none."""
    ranked = sorted(
        enumerate(addresses),
        key=lambda item: (
            item[1].type != FLOATING,
            not item[1].public,
            item[1].family != family,
            item[0],  # otherwise the order the cloud lists them in
        ),
    )
    return ranked[0][1].addr if ranked else None
