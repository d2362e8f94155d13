"""Neutron (network v2.0): version discovery and read-only networks, subnets and ports.

Networks are what ``find_network`` needs; subnets and ports exist so openstacksdk's cloud
layer (``conn.create_server``, server IP helpers) finds a consistent picture.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sim.state import Provider
from sim.web import Request, Response, Router, Service, token_rejected

router = Router()

CREATED = "2024-01-01T00:00:00Z"


def error(status: int, message: str, kind: str | None = None) -> Response:
    if status == 401:
        return token_rejected()
    default = {400: "HTTPBadRequest", 404: "HTTPNotFound", 503: "ServiceUnavailable"}.get(status, "NeutronError")
    return Response(status, {"NeutronError": {"type": kind or default, "message": message, "detail": ""}})


@router.route("GET", "", "discovery")
def versions(provider: Provider, req: Request) -> Response:
    link = {"rel": "self", "href": f"{req.provider_url}/network/v2.0/"}
    return Response(200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [link]}]})


@router.route("GET", "/v2.0", "discovery")
def resources(provider: Provider, req: Request) -> Response:
    names = ("network", "subnet", "port", "floatingip", "security_group", "router")
    items = [
        {
            "name": n,
            "collection": n.replace("_", "-") + "s",
            "links": [{"rel": "self", "href": f"{req.provider_url}/network/v2.0/{n.replace('_', '-')}s"}],
        }
        for n in names
    ]
    return Response(200, {"resources": items})


def _common(provider: Provider) -> dict[str, Any]:
    return {
        "tenant_id": provider.project_id,
        "project_id": provider.project_id,
        "created_at": CREATED,
        "updated_at": CREATED,
        "revision_number": 1,
        "tags": [],
        "description": "",
    }


def networks(provider: Provider) -> list[dict[str, Any]]:
    return [
        {
            **_common(provider),
            "id": n["id"],
            "name": n["name"],
            "status": "ACTIVE",
            "admin_state_up": True,
            "shared": True,
            "router:external": bool(n["external"]),
            "subnets": [n["subnet_v4_id"], n["subnet_v6_id"]],
            "mtu": 1500,
            "availability_zones": ["nova"],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "port_security_enabled": True,
            "is_default": n["index"] == 0,
            "provider:network_type": "flat",
        }
        for n in provider.networks
    ]


def subnets(provider: Provider) -> list[dict[str, Any]]:
    out = []
    for n in provider.networks:
        for version, key in ((4, "v4"), (6, "v6")):
            cidr = n[f"cidr_{key}"]
            out.append(
                {
                    **_common(provider),
                    "id": n[f"subnet_{key}_id"],
                    "name": f"{n['name']}-subnet{'' if version == 4 else '-v6'}",
                    "network_id": n["id"],
                    "ip_version": version,
                    "cidr": cidr,
                    "gateway_ip": str(next(ipaddress.ip_network(cidr).hosts())),
                    "enable_dhcp": True,
                    "dns_nameservers": [],
                    "host_routes": [],
                    "allocation_pools": [],
                    "ipv6_ra_mode": None if version == 4 else "slaac",
                    "ipv6_address_mode": None if version == 4 else "slaac",
                    "subnetpool_id": None,
                }
            )
    return out


def ports(provider: Provider) -> list[dict[str, Any]]:
    by_name = {n["name"]: n for n in provider.networks}
    out = []
    for server in provider.list_servers():
        if server.status() != "ACTIVE":
            continue
        for net_name, addrs in server.addresses.items():
            net = by_name[net_name]
            fixed = [
                {"subnet_id": net["subnet_v4_id" if a["version"] == 4 else "subnet_v6_id"], "ip_address": a["addr"]}
                for a in addrs
            ]
            out.append(
                {
                    **_common(provider),
                    "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{server.id}/{net['id']}")),
                    "name": "",
                    "network_id": net["id"],
                    "device_id": server.id,
                    "device_owner": "compute:nova",
                    "mac_address": addrs[0]["OS-EXT-IPS-MAC:mac_addr"],
                    "fixed_ips": fixed,
                    "status": "ACTIVE",
                    "admin_state_up": True,
                    "security_groups": [],
                    "binding:vnic_type": "normal",
                }
            )
    return out


def security_groups(provider: Provider) -> list[dict[str, Any]]:
    sg_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{provider.project_id}/default"))
    return [{**_common(provider), "id": sg_id, "name": "default", "security_group_rules": [], "stateful": True}]


def _matches(item: dict[str, Any], req: Request) -> bool:
    # Neutron filters on any attribute by equality; repeating a key means "any of".
    for key, values in req.query.items():
        if key in ("fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse") or key not in item:
            continue
        actual = item[key]
        rendered = str(actual).lower() if isinstance(actual, bool) else str(actual)
        if rendered not in values:
            return False
    return True


def _collection(key: str, items: list[dict[str, Any]], req: Request) -> Response:
    found = [i for i in items if _matches(i, req)]
    fields = req.query.get("fields")
    if fields:
        found = [{k: v for k, v in i.items() if k in fields} for i in found]
    return Response(200, {key: found})


def _member(key: str, items: list[dict[str, Any]], item_id: str, kind: str, label: str) -> Response:
    for item in items:
        if item["id"] == item_id:
            return Response(200, {key: item})
    return error(404, f"{label} {item_id} could not be found.", kind)


COLLECTIONS = (
    ("networks", "network", networks, "NetworkNotFound", "Network"),
    ("subnets", "subnet", subnets, "SubnetNotFound", "Subnet"),
    ("ports", "port", ports, "PortNotFound", "Port"),
    ("security-groups", "security_group", security_groups, "SecurityGroupNotFound", "Security group"),
    ("floatingips", "floatingip", lambda p: [], "FloatingIPNotFound", "Floating IP"),
    ("routers", "router", lambda p: [], "RouterNotFound", "Router"),
)


def _register(path: str, singular: str, source: Any, kind: str, label: str) -> None:
    plural_key = singular + "s"

    def list_handler(provider: Provider, req: Request) -> Response:
        return _collection(plural_key, source(provider), req)

    def get_handler(provider: Provider, req: Request, item_id: str) -> Response:
        return _member(singular, source(provider), item_id, kind, label)

    router.route("GET", f"/v2.0/{path}", f"{singular}_list")(list_handler)
    router.route("GET", f"/v2.0/{path}/{{}}", f"{singular}_get")(get_handler)


for _entry in COLLECTIONS:
    _register(*_entry)


@router.route("GET", "/v2.0/extensions", "extension_list")
def extensions(provider: Provider, req: Request) -> Response:
    names = ("external-net", "router", "security-group", "port-security", "standard-attr-tag")
    items = [{"alias": n, "name": n, "description": "", "links": [], "updated": CREATED} for n in names]
    return Response(200, {"extensions": items})


SERVICE = Service(prefix="network", router=router, error=error)
