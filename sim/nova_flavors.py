"""Nova flavors, limits, quota sets and the small read-only lists clients probe.

``GET /limits`` is where apps read ``maxTotalInstances``/``totalInstancesUsed`` and the matching
cores and RAM figures; it and the quota sets report exactly the usage the server store holds.
"""

from __future__ import annotations

from typing import Any

from sim.nova_api import MAX_METADATA_ITEMS, invalid_input, links, listing, not_found, router, versioned
from sim.state import Provider
from sim.web import Request, Response


def flavor_body(req: Request, mv: tuple[int, int], flavor: dict[str, Any], detail: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"id": flavor["id"], "name": flavor["name"], "links": links(req, "flavors", flavor["id"])}
    if mv >= (2, 55):
        body["description"] = flavor.get("description")
    if not detail:
        return body
    body.update(
        {
            "ram": flavor["ram"],
            "disk": flavor["disk"],
            "vcpus": flavor["vcpus"],
            "OS-FLV-EXT-DATA:ephemeral": flavor["ephemeral"],
            "OS-FLV-DISABLED:disabled": False,
            "os-flavor-access:is_public": True,
            "rxtx_factor": 1.0,
            # Before 2.75 Nova reported "no swap" as an empty string.
            "swap": flavor["swap"] if (flavor["swap"] or mv >= (2, 75)) else "",
        }
    )
    if mv >= (2, 61):
        body["extra_specs"] = dict(flavor.get("extra_specs", {}))
    return body


def _list_flavors(provider: Provider, req: Request, mv: tuple[int, int], detail: bool) -> Response:
    flavors = list(provider.flavors)
    for param, field in (("minRam", "ram"), ("minDisk", "disk")):
        value = req.arg(param)
        if value is not None:
            if not value.isdigit():
                return invalid_input(param, value, f"'{value}' is not a valid integer")
            flavors = [f for f in flavors if f[field] >= int(value)]
    return listing(req, flavors, "flavors", detail, lambda f: f["id"], lambda f: flavor_body(req, mv, f, detail))


@router.route("GET", "/v2.1/flavors", "flavor_list")
@versioned
def list_flavors(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    return _list_flavors(provider, req, mv, detail=False)


@router.route("GET", "/v2.1/flavors/detail", "flavor_list")
@versioned
def list_flavors_detail(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    return _list_flavors(provider, req, mv, detail=True)


@router.route("GET", "/v2.1/flavors/{}", "flavor_get")
@versioned
def get_flavor(provider: Provider, req: Request, mv: tuple[int, int], flavor_id: str) -> Response:
    flavor = provider.find_flavor(flavor_id)
    if flavor is None:
        return not_found("Flavor", flavor_id)
    return Response(200, {"flavor": flavor_body(req, mv, flavor)})


@router.route("GET", "/v2.1/flavors/{}/os-extra_specs", "flavor_get")
@versioned
def get_extra_specs(provider: Provider, req: Request, mv: tuple[int, int], flavor_id: str) -> Response:
    flavor = provider.find_flavor(flavor_id)
    if flavor is None:
        return not_found("Flavor", flavor_id)
    return Response(200, {"extra_specs": dict(flavor.get("extra_specs", {}))})


# -- limits and quotas -----------------------------------------------------
@router.route("GET", "/v2.1/limits", "limits")
@versioned
def limits(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    used = provider.usage()
    quota = provider.settings
    absolute: dict[str, int] = {
        "maxTotalInstances": quota.quota_instances,
        "totalInstancesUsed": used["instances"],
        # -1 is Nova's "unlimited".
        "maxTotalCores": quota.quota_cores,
        "totalCoresUsed": used["cores"],
        "maxTotalRAMSize": quota.quota_ram_mb,
        "totalRAMUsed": used["ram"],
        "maxServerMeta": MAX_METADATA_ITEMS,
        "maxImageMeta": 128,
        "maxTotalKeypairs": 100,
        "maxServerGroups": 10,
        "maxServerGroupMembers": 10,
        "totalServerGroupsUsed": 0,
    }
    if mv < (2, 36):
        absolute.update(
            {
                "maxSecurityGroups": 10,
                "maxSecurityGroupRules": 20,
                "totalSecurityGroupsUsed": 0,
                "maxTotalFloatingIps": 10,
                "totalFloatingIpsUsed": 0,
            }
        )
    if mv < (2, 57):
        absolute.update({"maxPersonality": 5, "maxPersonalitySize": 10240})
    return Response(200, {"limits": {"rate": [], "absolute": absolute}})


def _quota_set(provider: Provider, project_id: str, detail: bool) -> dict[str, Any]:
    used = provider.usage()
    quota = provider.settings
    limits_ = {"instances": quota.quota_instances, "cores": quota.quota_cores, "ram": quota.quota_ram_mb}
    static = {"key_pairs": 100, "metadata_items": MAX_METADATA_ITEMS, "server_groups": 10, "server_group_members": 10}
    body: dict[str, Any] = {"id": project_id}
    for key, limit in {**limits_, **static}.items():
        body[key] = {"limit": limit, "in_use": used.get(key, 0), "reserved": 0} if detail else limit
    return body


@router.route("GET", "/v2.1/os-quota-sets/{}", "quota_get")
@versioned
def quota_set(provider: Provider, req: Request, mv: tuple[int, int], project_id: str) -> Response:
    return Response(200, {"quota_set": _quota_set(provider, project_id, detail=False)})


@router.route("GET", "/v2.1/os-quota-sets/{}/detail", "quota_get")
@versioned
def quota_set_detail(provider: Provider, req: Request, mv: tuple[int, int], project_id: str) -> Response:
    return Response(200, {"quota_set": _quota_set(provider, project_id, detail=True)})


@router.route("GET", "/v2.1/os-availability-zone", "availability_zones")
@versioned
def availability_zones(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    return Response(
        200, {"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]}
    )


@router.route("GET", "/v2.1/os-keypairs", "keypair_list")
@versioned
def keypairs(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    return Response(200, {"keypairs": []})
