"""Quota by resource: how many instances of ours an account can still take, whichever of its
quotas runs out first (REAL-CLOUDS.md: an account capped at 20 vCPUs holds only 5 servers of a
4-vCPU flavor, whatever its instance quota says).

Each resource the account limits gives a room: its limit less what others use there (what is
used beyond what our instances hold), in the resource's units, and the instances of ours that
room takes. The provider's `quota_instances` is the smallest of those, so the slot machinery
(one `in_use` counter, one conditional write per reserve, `give_back`, drift correction) stays
as it is and never lets a launch ask the account for more than it has.

One counter for all labels means one footprint per resource: a room is divided by the biggest
footprint among the provider's labels, and our own use is taken as `in_use` times the smallest
(so what others use is never underestimated). Exact when the labels share a flavor; with mixed
flavors, conservative: as if every instance were the biggest (DESIGN.md, Placement).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from chalicelib import addresses, cloud, models

log = logging.getLogger("oms.quota")


@dataclass(frozen=True)
class Room:
    """One limited resource of the account, as the last check read it."""

    limit: int
    used: int  # by the whole project, ours included
    room: int  # what we may hold: the limit less what others use
    per_instance: int  # the biggest footprint of the provider's labels
    instances: int  # how many instances of ours that room takes


@dataclass(frozen=True)
class Reading:
    """What a check read of the account: its quotas and our labels' footprints."""

    limits: cloud.Limits
    network: cloud.NetworkQuota | None  # read with `floating_ip: auto`, where Neutron is asked anyway
    flavors: tuple[cloud.Flavor, ...]  # the labels' flavors, read when cores or RAM are limited


def _network(provider: models.Provider) -> cloud.NetworkQuota | None:
    """With `floating_ip: auto` every instance there holds a floating IP (and a port): the
    project's Neutron quotas. Ones that cannot be read leave the other rooms to cap it (the check
    itself passed)."""
    if provider.floating_ip != addresses.FLOATING_IP_AUTO:
        return None
    try:
        return cloud.network_quota(provider)
    except cloud.CloudError as error:
        log.warning("%s: network quotas unread (%s): capped by the others", provider.name, error.message)
        return None


def _flavors(provider: models.Provider, limits: cloud.Limits) -> tuple[cloud.Flavor, ...]:
    """The labels' flavors (cached by `cloud.flavor`), when a vCPU or RAM quota needs them. A
    label whose flavor cannot be found is left out: it cannot launch until it is found, and the
    launch that finds it caches it for the next check."""
    if limits.cores.limit < 0 and limits.ram_mb.limit < 0:
        return ()
    found = []
    for label in sorted(provider.labels.as_dict()):
        try:
            found.append(cloud.flavor(provider, label))
        except cloud.CloudError as error:
            log.warning("%s: label %s left out of the quotas (%s)", provider.name, label, error.message)
    return tuple(found)


def read(provider: models.Provider, limits: cloud.Limits) -> Reading:
    """Read what the check needs besides `GET /limits` (already read: it is the health check)."""
    return Reading(limits, _network(provider), _flavors(provider, limits))


def _room(quota: cloud.Quota, ours: int, smallest: int, biggest: int) -> Room | None:
    """None when the resource is unlimited, or no footprint is known to divide it by."""
    if quota.limit < 0 or biggest <= 0:
        return None
    others = max(0, quota.used - ours * smallest)
    room = max(0, quota.limit - others)
    return Room(quota.limit, quota.used, room, biggest, room // biggest)


def _span(footprints: list[int]) -> tuple[int, int]:
    return min(footprints, default=0), max(footprints, default=0)


def rooms(reading: Reading, ours: int) -> dict[str, Room]:
    """Each limited resource's room, given `ours` (the provider's `in_use`): instances, cores,
    ram_mb, and with the network read floating_ips and ports (one of each per instance)."""
    limits, flavors = reading.limits, reading.flavors
    sized = {  # resource: (quota, our smallest footprint, our biggest)
        "instances": (limits.instances, 1, 1),
        "cores": (limits.cores, *_span([f.vcpus for f in flavors])),
        "ram_mb": (limits.ram_mb, *_span([f.ram_mb for f in flavors])),
    }
    if reading.network is not None:
        sized.update(floating_ips=(reading.network.floating_ips, 1, 1), ports=(reading.network.ports, 1, 1))
    found = {name: _room(quota, ours, smallest, biggest) for name, (quota, smallest, biggest) in sized.items()}
    return {name: room for name, room in found.items() if room is not None}


def instances(found: dict[str, Room]) -> int | None:
    """The instances of ours the account takes: the smallest room; None when nothing is limited."""
    return min((room.instances for room in found.values()), default=None)


def record(found: dict[str, Room]) -> list:
    """The provider update actions that keep a check's rooms: `quota_instances` (what slots are
    reserved against) and `quota_rooms` (what the views show)."""
    cap, kept = instances(found), {name: asdict(room) for name, room in found.items()}
    item = models.Provider
    return [
        item.quota_instances.remove() if cap is None else item.quota_instances.set(cap),
        item.quota_rooms.set(kept) if kept else item.quota_rooms.remove(),
    ]
