"""Neutron (network v2.0): networks, subnets, ports, floating IPs and security groups.

Networks, subnets and ports are read-only views of the provider's layout and servers;
floating IPs and security groups are created, changed and deleted here, because whether a
client can reach a server depends on them (sim.listeners plays the result on real sockets).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from sim.state import RULE_IDENTITY, FloatingIP, NeutronError, Provider, iso, port_id_for
from sim.web import BadBody, Request, Response, Router, Service, token_rejected

router = Router()

CREATED = "2024-01-01T00:00:00Z"


def error(status: int, message: str, kind: str | None = None) -> Response:
    if status == 401:
        return token_rejected()
    default = {400: "HTTPBadRequest", 404: "HTTPNotFound", 409: "Conflict", 503: "ServiceUnavailable"}.get(
        status, "NeutronError"
    )
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
            "router:external": bool(n["external"]),
            "shared": bool(n["shared"]),
            "subnets": [n[f"subnet_v{v}_id"] for v in (4, 6) if n[f"v{v}"]],
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
            if not n[key]:
                continue
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
                    "id": port_id_for(server.id, net["id"]),
                    "name": "",
                    "network_id": net["id"],
                    "device_id": server.id,
                    "device_owner": "compute:nova",
                    "mac_address": addrs[0]["OS-EXT-IPS-MAC:mac_addr"] if addrs else "",
                    "fixed_ips": fixed,
                    "status": "ACTIVE",
                    "admin_state_up": True,
                    "security_groups": list(server.group_ids),
                    "binding:vnic_type": "normal",
                }
            )
    return out


def _rule_body(provider: Provider, rule: dict[str, Any]) -> dict[str, Any]:
    common = _common(provider)
    del common["tags"]
    return {**common, **rule, "belongs_to_default_sg": rule["security_group_id"] == provider.default_group_id}


def security_groups(provider: Provider) -> list[dict[str, Any]]:
    with provider.lock:
        groups = [dict(g, rules=list(g["rules"])) for g in provider.security_groups.values()]
    return [
        {
            **_common(provider),
            "id": g["id"],
            "name": g["name"],
            "description": g["description"],
            "created_at": iso(g["created_at"]),
            "security_group_rules": [_rule_body(provider, r) for r in g["rules"]],
            "stateful": True,
            "shared": False,
        }
        for g in groups
    ]


def security_group_rules(provider: Provider) -> list[dict[str, Any]]:
    with provider.lock:
        rules = [r for g in provider.security_groups.values() for r in g["rules"]]
    return [_rule_body(provider, r) for r in rules]


def _fip_body(provider: Provider, fip: FloatingIP) -> dict[str, Any]:
    return {
        **_common(provider),
        "id": fip.id,
        "floating_ip_address": fip.address,
        "floating_network_id": fip.network_id,
        "port_id": fip.port_id,
        "fixed_ip_address": fip.fixed_ip_address,
        "router_id": fip.router_id,
        "status": "ACTIVE" if fip.port_id else "DOWN",
        "description": fip.description,
        "tags": list(fip.tags),
        "created_at": iso(fip.created_at),
        "updated_at": iso(fip.updated_at),
        "dns_domain": "",
        "dns_name": "",
        "qos_policy_id": None,
        "port_details": None,
        "port_forwardings": [],
    }


def floating_ips(provider: Provider) -> list[dict[str, Any]]:
    with provider.lock:
        fips = list(provider.floating_ips.values())
    return [_fip_body(provider, f) for f in fips]


def routers(provider: Provider) -> list[dict[str, Any]]:
    # The router a floating IP goes through exists only where the layout has one.
    if not provider.settings.floating_ip_router or not any(n["external"] for n in provider.networks):
        return []
    external = next(n for n in provider.networks if n["external"])
    return [
        {
            **_common(provider),
            "id": provider.router_id,
            "name": "router1",
            "status": "ACTIVE",
            "admin_state_up": True,
            "external_gateway_info": {"network_id": external["id"], "enable_snat": True, "external_fixed_ips": []},
            "routes": [],
            "distributed": False,
            "ha": False,
            "availability_zones": ["nova"],
        }
    ]


def _matches(item: dict[str, Any], req: Request) -> bool:
    # Neutron filters on any attribute by equality; repeating a key means "any of".
    for key, values in req.query.items():
        if key in ("tags", "tags-any", "not-tags", "not-tags-any"):
            wanted = {t for v in values for t in v.split(",") if t}
            have = set(item.get("tags", []))
            matched = {"tags": wanted <= have, "tags-any": bool(wanted & have)}.get(key)
            if key == "not-tags":
                matched = not wanted <= have
            elif key == "not-tags-any":
                matched = not wanted & have
            if not matched:
                return False
            continue
        if key in ("fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse") or key not in item:
            continue
        actual = item[key]
        if isinstance(actual, bool):
            # Neutron converts a boolean filter as its API does: True, true, 1 all mean true.
            if actual not in {v.strip().lower() in ("true", "1") for v in values}:
                return False
        elif str(actual) not in values:
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
    (
        "security-group-rules",
        "security_group_rule",
        security_group_rules,
        "SecurityGroupRuleNotFound",
        "Security group rule",
    ),
    ("floatingips", "floatingip", floating_ips, "FloatingIPNotFound", "Floating IP"),
    ("routers", "router", routers, "RouterNotFound", "Router"),
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


# -- writes ----------------------------------------------------------------------------
def _resource(req: Request, key: str) -> dict[str, Any]:
    body = req.json()
    item = body.get(key) if isinstance(body, dict) else None
    if not isinstance(item, dict):
        raise BadBody(f"Resource body required: expected an object under {key!r}")
    return item


def _neutron(call: Any) -> Response:
    try:
        return call()
    except NeutronError as exc:
        return error(exc.status, str(exc), exc.kind)


@router.route("POST", "/v2.0/floatingips", "floatingip_create")
def create_floating_ip(provider: Provider, req: Request) -> Response:
    item = _resource(req, "floatingip")
    network_id = item.get("floating_network_id")
    if not isinstance(network_id, str):
        return error(400, "Invalid input for operation: floating_network_id is required.", "InvalidInput")
    try:
        made = provider.create_floating_ip(network_id, item.get("port_id"), str(item.get("description") or ""))
    except NeutronError as exc:
        return error(exc.status, str(exc), exc.kind)
    time.sleep(provider.settings.floating_ip_answer_seconds)  # it exists meanwhile: see the setting
    return Response(201, {"floatingip": _fip_body(provider, made)})


@router.route("PUT", "/v2.0/floatingips/{}", "floatingip_update")
def update_floating_ip(provider: Provider, req: Request, fip_id: str) -> Response:
    item = _resource(req, "floatingip")
    changes = {k: item[k] for k in ("port_id", "description") if k in item}
    return _neutron(
        lambda: Response(200, {"floatingip": _fip_body(provider, provider.update_floating_ip(fip_id, changes))})
    )


@router.route("DELETE", "/v2.0/floatingips/{}", "floatingip_delete")
def delete_floating_ip(provider: Provider, req: Request, fip_id: str) -> Response:
    return _neutron(lambda: (provider.delete_floating_ip(fip_id), Response(204))[1])


def _tags_body(req: Request) -> list[str]:
    body = req.json()
    tags = body.get("tags") if isinstance(body, dict) else None
    if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in tags):
        raise BadBody("Invalid input for tags: a list of strings of 1-255 characters is required.")
    return tags


@router.route("GET", "/v2.0/floatingips/{}/tags", "floatingip_tags")
def get_tags(provider: Provider, req: Request, fip_id: str) -> Response:
    return _neutron(lambda: Response(200, {"tags": provider.set_tags(fip_id, None)}))


@router.route("PUT", "/v2.0/floatingips/{}/tags", "floatingip_tags")
@router.route("POST", "/v2.0/floatingips/{}/tags", "floatingip_tags")
def replace_tags(provider: Provider, req: Request, fip_id: str) -> Response:
    tags = _tags_body(req)
    return _neutron(lambda: Response(200 if req.method == "PUT" else 201, {"tags": provider.set_tags(fip_id, tags)}))


@router.route("DELETE", "/v2.0/floatingips/{}/tags", "floatingip_tags")
def clear_tags(provider: Provider, req: Request, fip_id: str) -> Response:
    return _neutron(lambda: (provider.set_tags(fip_id, []), Response(204))[1])


@router.route("GET", "/v2.0/floatingips/{}/tags/{}", "floatingip_tags")
def check_tag(provider: Provider, req: Request, fip_id: str, tag: str) -> Response:
    def check() -> Response:
        if tag not in provider.set_tags(fip_id, None):
            raise NeutronError(404, "TagNotFound", f"Tag {tag} could not be found for floatingip {fip_id}.")
        return Response(204)

    return _neutron(check)


@router.route("PUT", "/v2.0/floatingips/{}/tags/{}", "floatingip_tags")
def add_tag(provider: Provider, req: Request, fip_id: str, tag: str) -> Response:
    return _neutron(lambda: (provider.set_tags(fip_id, None, add=tag), Response(201))[1])


@router.route("DELETE", "/v2.0/floatingips/{}/tags/{}", "floatingip_tags")
def remove_tag(provider: Provider, req: Request, fip_id: str, tag: str) -> Response:
    return _neutron(lambda: (provider.set_tags(fip_id, None, remove=tag), Response(204))[1])


@router.route("POST", "/v2.0/security-groups", "security_group_create")
def create_security_group(provider: Provider, req: Request) -> Response:
    item = _resource(req, "security_group")
    name = item.get("name", "")
    if not isinstance(name, str) or len(name) > 255:
        return error(400, f"Invalid input for name. Reason: '{name}' is not a valid string.", "InvalidInput")
    if name == "default":
        return error(409, "Default security group already exists.", "SecurityGroupDefaultAlreadyExists")
    group = provider.create_security_group(name, str(item.get("description") or ""))
    return Response(201, {"security_group": next(g for g in security_groups(provider) if g["id"] == group["id"])})


@router.route("DELETE", "/v2.0/security-groups/{}", "security_group_delete")
def delete_security_group(provider: Provider, req: Request, group_id: str) -> Response:
    return _neutron(lambda: (provider.delete_security_group(group_id), Response(204))[1])


RULE_FIELDS = (*RULE_IDENTITY, "description")


def _rule_attrs(item: dict[str, Any]) -> dict[str, Any]:
    """Neutron's checks on a new rule, returning its normalised attributes (NeutronError otherwise)."""
    attrs = {k: item[k] for k in RULE_FIELDS if k in item}
    if attrs.get("direction") not in ("ingress", "egress"):
        raise NeutronError(400, "InvalidInput", "Invalid input for direction. Reason: must be ingress or egress.")
    attrs.setdefault("ethertype", "IPv4")
    if attrs["ethertype"] not in ("IPv4", "IPv6"):
        raise NeutronError(400, "InvalidInput", f"Invalid input for ethertype. Reason: {attrs['ethertype']!r}.")
    for key in ("port_range_min", "port_range_max"):
        if attrs.get(key) is not None:
            try:
                attrs[key] = int(attrs[key])
            except (TypeError, ValueError):
                raise NeutronError(400, "InvalidInput", f"Invalid input for {key}.") from None
            if not 0 <= attrs[key] <= 65535:
                raise NeutronError(400, "SecurityGroupInvalidPortValue", f"Invalid value for port {attrs[key]}.")
    low, high = attrs.get("port_range_min"), attrs.get("port_range_max")
    if low is not None and high is not None and low > high:
        raise NeutronError(
            400,
            "SecurityGroupInvalidPortRange",
            "For TCP/UDP protocols, port_range_min must be <= port_range_max",
        )
    prefix = attrs.get("remote_ip_prefix")
    if prefix is not None:
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise NeutronError(400, "InvalidInput", f"Invalid input for remote_ip_prefix: {prefix!r}.") from None
        if f"IPv{network.version}" != attrs["ethertype"]:
            raise NeutronError(
                400,
                "SecurityGroupRuleParameterConflict",
                f"Conflicting value ethertype {attrs['ethertype']} for CIDR {prefix}",
            )
        attrs["remote_ip_prefix"] = str(network)
    return attrs


@router.route("POST", "/v2.0/security-group-rules", "security_group_rule_create")
def create_security_group_rule(provider: Provider, req: Request) -> Response:
    item = _resource(req, "security_group_rule")

    def create() -> Response:
        rule = provider.add_rule(str(item.get("security_group_id")), _rule_attrs(item))
        return Response(201, {"security_group_rule": _rule_body(provider, rule)})

    return _neutron(create)


@router.route("DELETE", "/v2.0/security-group-rules/{}", "security_group_rule_delete")
def delete_security_group_rule(provider: Provider, req: Request, rule_id: str) -> Response:
    return _neutron(lambda: (provider.delete_rule(rule_id), Response(204))[1])


def _quota_limits(provider: Provider) -> dict[str, int]:
    return {
        "floatingip": provider.settings.floating_ip_quota,
        "network": 100,
        "subnet": 100,
        "port": provider.settings.quota_ports,
        "router": 10,
        "security_group": 10,
        "security_group_rule": 100,
        "rbac_policy": 10,
        "subnetpool": -1,
    }


@router.route("GET", "/v2.0/quotas/{}", "quota_get")
def get_quota(provider: Provider, req: Request, project_id: str) -> Response:
    return Response(200, {"quota": _quota_limits(provider)})


@router.route("GET", "/v2.0/quotas/{}/details", "quota_get")
def get_quota_details(provider: Provider, req: Request, project_id: str) -> Response:
    """Each limit with its usage (the quota_details extension); floating IPs and ports are the
    resources counted here (the project's, whoever made them), the rest show none used."""
    with provider.lock:
        used = {"floatingip": len(provider.floating_ips), "port": len(provider.ports)}
    quota = {
        name: {"limit": limit, "used": used.get(name, 0), "reserved": 0}
        for name, limit in _quota_limits(provider).items()
    }
    return Response(200, {"quota": quota})


@router.route("GET", "/v2.0/extensions", "extension_list")
def extensions(provider: Provider, req: Request) -> Response:
    names = (
        "external-net",
        "router",
        "security-group",
        "port-security",
        "standard-attr-tag",
        "quotas",
        "quota_details",
    )
    items = [{"alias": n, "name": n, "description": "", "links": [], "updated": CREATED} for n in names]
    return Response(200, {"extensions": items})


SERVICE = Service(prefix="network", router=router, error=error)
