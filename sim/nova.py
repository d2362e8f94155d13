"""Nova servers: create (with Nova's validation and quota errors), list, show, delete, metadata.

Status is computed on read from the boot deadline fixed at creation, so no timers run;
bodies follow the requested microversion where openstacksdk cares (embedded flavor from 2.47).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from sim import nova_flavors, topology  # noqa: F401 - nova_flavors registers the flavor/limits routes
from sim.nova_api import MAX_METADATA_ITEMS, error, invalid_input, links, listing, not_found, router, versioned
from sim.state import Provider, QuotaExceeded, Server, ServerSpec, iso
from sim.web import Request, Response, Service

# Content cloud-init runs without MIME: what a provider with user_data_formats "no_multipart" accepts.
USER_DATA_PREFIXES = ("#!", "#cloud-config", "#include", "#include-once", "#cloud-boothook")
ZERO_DISK = "Only volume-backed servers are allowed for flavors with zero disk."
NETWORK_AMBIGUOUS = "More than one possible network found. Specify network ID(s) to select which one(s) to connect to."
UNEXPECTED = (
    "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach "
    "the Nova API log if possible.\n<class 'nova.exception.InstanceCreateFailure'>"
)


def server_body(provider: Provider, req: Request, mv: tuple[int, int], server: Server) -> dict[str, Any]:
    status = server.status()
    flavor = provider.find_flavor(server.flavor_id) or {
        "id": server.flavor_id,
        "name": "",
        "vcpus": 0,
        "ram": 0,
        "disk": 0,
    }
    if mv >= (2, 47):
        flavor_ref: dict[str, Any] = {
            "vcpus": flavor.get("vcpus"),
            "ram": flavor.get("ram"),
            "disk": flavor.get("disk"),
            "ephemeral": flavor.get("ephemeral", 0),
            "swap": flavor.get("swap", 0),
            "original_name": flavor.get("name"),
            "extra_specs": dict(flavor.get("extra_specs", {})),
        }
    else:
        flavor_ref = {"id": server.flavor_id, "links": links(req, "flavors", server.flavor_id)[1:]}
    states = {"BUILD": ("building", "spawning", 0), "ACTIVE": ("active", None, 1), "ERROR": ("error", None, 0)}
    vm_state, task_state, power_state = states[status]
    if server.gone_at is not None:
        task_state = "deleting"
    body: dict[str, Any] = {
        "id": server.id,
        "name": server.name,
        "status": status,
        "tenant_id": provider.project_id,
        "user_id": provider.user_id,
        "metadata": dict(server.metadata),
        "hostId": hashlib.sha224(f"{provider.project_id}compute-1".encode()).hexdigest() if status == "ACTIVE" else "",
        # A volume-backed server shows no image, as in Nova.
        "image": {"id": server.image_id, "links": links(req, "images", server.image_id)[1:]}
        if server.image_id and not server.volume_ids
        else "",
        "flavor": flavor_ref,
        "created": iso(server.created_at),
        "updated": iso(server.updated_at),
        "addresses": provider.addresses_of(server),
        "accessIPv4": "",
        "accessIPv6": "",
        "links": links(req, "servers", server.id),
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 100 if status == "ACTIVE" else 0,
        "OS-EXT-AZ:availability_zone": "nova" if status == "ACTIVE" else "",
        "config_drive": "True" if server.config_drive else "",
        "key_name": server.key_name,
        "OS-SRV-USG:launched_at": iso(server.created_at, micro=True) if status == "ACTIVE" else None,
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:vm_state": vm_state,
        "OS-EXT-STS:task_state": task_state,
        "OS-EXT-STS:power_state": power_state,
        "os-extended-volumes:volumes_attached": [
            {"id": v, **({"delete_on_termination": _deletes(provider, v)} if mv >= (2, 3) else {})}
            for v in server.volume_ids
        ],
    }
    if status == "ACTIVE":
        body["security_groups"] = [{"name": n} for n in server.security_groups]
    if status == "ERROR":
        body["fault"] = {"code": 500, "created": iso(server.created_at), "message": server.fault_message}
    if mv >= (2, 9):
        body["locked"] = server.locked
    if mv >= (2, 19):
        body["description"] = None
    if mv >= (2, 26):
        body["tags"] = []
    if mv >= (2, 63):
        body["trusted_image_certificates"] = None
    if mv >= (2, 73):
        body["locked_reason"] = None
    if mv >= (2, 96):
        body["pinned_availability_zone"] = None
    return body


def _deletes(provider: Provider, volume_id: str) -> bool:
    volume = provider.volumes.get(volume_id)
    return bool(volume and volume.delete_on_termination)


def _list_servers(provider: Provider, req: Request, mv: tuple[int, int], detail: bool) -> Response:
    servers = provider.list_servers()
    name = req.arg("name")
    if name:
        try:
            pattern = re.compile(name)
            servers = [s for s in servers if pattern.search(s.name)]
        except re.error:
            servers = [s for s in servers if name in s.name]
    status = req.arg("status")
    if status:
        servers = [s for s in servers if s.status() == status.upper()]
    for param, attr in (("image", "image_id"), ("flavor", "flavor_id")):
        value = req.arg(param)
        if value:
            servers = [s for s in servers if getattr(s, attr) == value]
    if detail:
        return listing(req, servers, "servers", True, lambda s: s.id, lambda s: server_body(provider, req, mv, s))

    def brief(server: Server) -> dict[str, Any]:
        return {"id": server.id, "name": server.name, "links": links(req, "servers", server.id)}

    return listing(req, servers, "servers", False, lambda s: s.id, brief)


@router.route("GET", "/v2.1/servers", "server_list")
@versioned
def list_servers(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    return _list_servers(provider, req, mv, detail=False)


@router.route("GET", "/v2.1/servers/detail", "server_list")
@versioned
def list_servers_detail(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    return _list_servers(provider, req, mv, detail=True)


@router.route("GET", "/v2.1/servers/{}", "server_get")
@versioned
def get_server(provider: Provider, req: Request, mv: tuple[int, int], server_id: str) -> Response:
    server = provider.get_server(server_id)
    if server is None:
        return not_found("Instance", server_id)
    return Response(200, {"server": server_body(provider, req, mv, server)})


@router.route("GET", "/v2.1/servers/{}/ips", "server_get")
@versioned
def get_server_ips(provider: Provider, req: Request, mv: tuple[int, int], server_id: str) -> Response:
    server = provider.get_server(server_id)
    if server is None:
        return not_found("Instance", server_id)
    return Response(200, {"addresses": provider.addresses_of(server)})


@router.route("DELETE", "/v2.1/servers/{}", "server_delete")
@versioned
def delete_server(provider: Provider, req: Request, mv: tuple[int, int], server_id: str) -> Response:
    deleted = provider.delete_server(server_id)
    if not deleted:
        return not_found("Instance", server_id)
    if deleted == "locked":
        return error(409, f"Instance {server_id} is locked")
    return Response(204)


def _ref_id(ref: str) -> str:
    # Nova accepts either a bare id or a full href ending in the id.
    return ref.rstrip("/").rsplit("/", 1)[-1]


def validate_metadata(metadata: Any) -> Response | None:
    """Nova's metadata rules; None when valid."""
    if not isinstance(metadata, dict):
        return invalid_input("metadata", metadata, f"{metadata!r} is not of type 'object'")
    for key, value in metadata.items():
        if not isinstance(value, str):
            return invalid_input(key, value, f"{value!r} is not of type 'string'")
        if not 1 <= len(key) <= 255 or len(value) > 255:
            return invalid_input("metadata", metadata, "Metadata keys must be 1-255 and values 0-255 characters")
    if len(metadata) > MAX_METADATA_ITEMS:
        return error(
            403,
            f"Quota exceeded for metadata_items: Requested {len(metadata)}, "
            f"but already used 0 of {MAX_METADATA_ITEMS} metadata_items",
        )
    return None


def parse_create(provider: Provider, body: Any, mv: tuple[int, int]) -> ServerSpec | Response:
    """Validate a POST /servers body the way Nova does, in Nova's order of checks."""
    server = body.get("server") if isinstance(body, dict) else None
    if not isinstance(server, dict):
        return invalid_input("server", server, "'server' is a required property")
    for required in ("name", "flavorRef"):
        if required not in server:
            return invalid_input("server", server, f"'{required}' is a required property")
    name = server["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        return invalid_input("name", name, "Invalid server name")
    networks = server.get("networks")
    if networks is None and mv >= (2, 37):
        return invalid_input("server", server, "'networks' is a required property")
    metadata = server.get("metadata", {})
    problem = validate_metadata(metadata)
    if problem:
        return problem
    user_data = server.get("user_data")
    if user_data is not None:
        try:
            if not isinstance(user_data, str):
                raise binascii.Error
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            return invalid_input("user_data", user_data, f"{user_data!r} is not a 'base64'")
        if len(user_data) > 65535:
            return invalid_input("user_data", "...", "user_data is longer than 65535 characters")
        problem = _user_data_rules(provider, base64.b64decode(user_data))
        if problem:
            return problem
    counts = {}
    for key in ("min_count", "max_count"):
        raw = server.get(key, 1)
        try:
            counts[key] = int(raw)
        except (TypeError, ValueError):
            return invalid_input(key, raw, f"{raw!r} is not a valid integer")
        if counts[key] < 1:
            return invalid_input(key, raw, f"{raw} is less than the minimum of 1")
    if counts["max_count"] < counts["min_count"]:
        return error(400, "min_count must be <= max_count")
    image_ref = server.get("imageRef")
    image_id = _ref_id(image_ref) if isinstance(image_ref, str) and image_ref else None
    boot_volume = _boot_volume(provider, server.get("block_device_mapping_v2"))
    if isinstance(boot_volume, Response):
        return boot_volume
    if image_id is None and boot_volume is None:
        return error(400, "Block Device Mapping is Invalid: You specified more local devices than the limit allows")
    if image_id is not None and provider.find_image(image_id) is None:
        return error(400, f"Image {image_id} could not be found.")
    flavor_ref = server["flavorRef"]
    flavor_id = _ref_id(str(flavor_ref))
    flavor = provider.find_flavor(flavor_id)
    if flavor is None:
        return error(400, f"Flavor {flavor_id} could not be found.")
    if not flavor["disk"] and boot_volume is None:
        return error(403, ZERO_DISK)
    if boot_volume is not None:
        image_id = boot_volume["image_id"]
    network_ids: list[str]
    if networks in (None, "auto"):
        # Nova's choice when no network is named: the single available one, else an error.
        available = topology.available_for_auto(provider.networks)
        if len(available) > 1:
            return error(409, NETWORK_AMBIGUOUS)
        if not available and networks == "auto":
            return error(400, f"Unable to automatically allocate a network for project {provider.project_id}")
        network_ids = [available[0]["id"]] if available else []
    elif networks == "none":
        network_ids = []
    elif isinstance(networks, list):
        network_ids = []
        for net in networks:
            if not isinstance(net, dict):
                return invalid_input("networks", networks, f"{net!r} is not of type 'object'")
            if "port" in net:
                return error(400, f"Port {net['port']} could not be found.")
            if "uuid" not in net:
                return error(400, "Bad networks format: network uuid is not in proper format")
            found = provider.find_network(net["uuid"])
            if found is None:
                return error(400, f"Network {net['uuid']} could not be found.")
            if found["external"] and not found["shared"]:
                return error(403, f"It is not allowed to create an interface on external network {net['uuid']}")
            network_ids.append(net["uuid"])
    else:
        return invalid_input("networks", networks, f"{networks!r} is not valid under any of the given schemas")
    groups = server.get("security_groups") or [{"name": "default"}]
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "name" in g for g in groups):
        return invalid_input("security_groups", groups, "security_groups must be a list of {'name': ...}")
    group_ids = provider.resolve_groups([str(g["name"]) for g in groups])
    if isinstance(group_ids, tuple):
        return error(*group_ids)
    key_name = server.get("key_name")
    return ServerSpec(
        name=name,
        image_id=image_id,
        flavor_id=flavor_id,
        network_ids=network_ids,
        metadata=dict(metadata),
        user_data=user_data,
        key_name=key_name if isinstance(key_name, str) else None,
        security_groups=[g["name"] for g in groups],
        min_count=counts["min_count"],
        max_count=counts["max_count"],
        group_ids=group_ids,
        boot_volume=boot_volume,
        # Nova takes a boolean or its string forms; a config drive is what a server without a
        # metadata service reads its user data from.
        config_drive=server.get("config_drive") in (True, "true", "True", "1", 1),
    )


def _user_data_rules(provider: Provider, decoded: bytes) -> Response | None:
    """A provider's own limits on user data (ConoHa: 16 KiB, no MIME multipart); None when accepted."""
    settings = provider.settings
    cap = settings.user_data_max_bytes
    if cap is not None and len(decoded) > cap:
        return invalid_input("user_data", "...", f"user_data is {len(decoded)} bytes; at most {cap} bytes are allowed")
    if settings.user_data_formats == "no_multipart" and not decoded.lstrip().startswith(
        tuple(p.encode() for p in USER_DATA_PREFIXES)
    ):
        return invalid_input(
            "user_data",
            "...",
            "user_data must start with #!, #cloud-config, #include, #include-once or #cloud-boothook; "
            "MIME multipart and other formats are not accepted",
        )
    return None


def _boot_volume(provider: Provider, bdms: Any) -> dict[str, Any] | Response | None:
    """The boot volume a ``block_device_mapping_v2`` asks for (image -> volume), or Nova's 400."""
    if not bdms:
        return None
    if not isinstance(bdms, list) or not all(isinstance(b, dict) for b in bdms):
        return invalid_input("block_device_mapping_v2", bdms, f"{bdms!r} is not of type 'array'")
    for bdm in bdms:
        source, destination = bdm.get("source_type"), bdm.get("destination_type", "volume")
        if source == "image" and destination == "local":
            continue  # the image itself as the root disk: an ordinary image boot
        if source != "image" or destination != "volume":
            # No Cinder here: only a volume made from an image at boot can be simulated.
            return error(
                400,
                f"Block Device Mapping is Invalid: source_type {source!r} with destination_type "
                f"{destination!r} is not supported by this simulator (no Cinder volumes).",
            )
        image_id = str(bdm.get("uuid") or "")
        if provider.find_image(image_id) is None:
            return error(400, f"Image {image_id} could not be found.")
        size = bdm.get("volume_size")
        try:
            size = int(size) if size is not None else 0
        except (TypeError, ValueError):
            return invalid_input("volume_size", size, f"{size!r} is not a valid integer")
        if size <= 0:
            return error(400, "Images with destination_type 'volume' need to have a non-zero size specified")
        delete = bdm.get("delete_on_termination", False)
        if isinstance(delete, str):
            delete = delete.lower() in ("true", "1", "yes")
        return {"size": size, "image_id": image_id, "delete_on_termination": bool(delete)}
    return None


@router.route("POST", "/v2.1/servers", "server_create")
@versioned
def create_server(provider: Provider, req: Request, mv: tuple[int, int]) -> Response:
    spec = parse_create(provider, req.json(), mv)
    if isinstance(spec, Response):
        return spec
    create_error = provider.settings.create_error
    if create_error == 500:
        return error(500, UNEXPECTED)
    if create_error == 503:
        return error(503, "The server is currently unavailable. Please try again at a later time.")
    try:
        created = provider.create_servers(spec)
    except QuotaExceeded as exc:
        return error(403, str(exc))
    if provider.settings.create_error_after == 500:
        return error(500, UNEXPECTED)  # the servers exist all the same
    first = created[0]
    body = {
        "id": first.id,
        "links": links(req, "servers", first.id),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": n} for n in first.security_groups],
        "adminPass": first.admin_pass,
    }
    return Response(202, {"server": body}, {"Location": body["links"][0]["href"]})


# -- server actions ----------------------------------------------------------
@router.route("POST", "/v2.1/servers/{}/action", "server_action")
@versioned
def server_action(provider: Provider, req: Request, mv: tuple[int, int], server_id: str) -> Response:
    body = req.json()
    server = provider.get_server(server_id)
    if server is None:
        return not_found("Instance", server_id)
    action = next(iter(body), None) if isinstance(body, dict) and body else None
    if action != "os-getConsoleOutput":
        return error(400, f"There is no such action: {action}")
    args = body[action] or {}
    length = args.get("length") if isinstance(args, dict) else None
    if length is not None:
        try:
            length = int(length)
        except (TypeError, ValueError):
            return invalid_input("length", length, f"{length!r} is not valid under any of the given schemas")
    if server.status() != "ACTIVE":
        # Nova needs the guest on a host to read its console: InstanceNotReady, 409.
        return error(409, f"Instance {server_id} is not ready")
    output = provider.console_output(server_id) or ""
    if length is not None and length >= 0:
        output = "".join(output.splitlines(keepends=True)[-length:]) if length else ""
    return Response(200, {"output": output})


# -- server metadata -------------------------------------------------------
@router.route("GET", "/v2.1/servers/{}/metadata", "server_metadata")
@versioned
def get_metadata(provider: Provider, req: Request, mv: tuple[int, int], server_id: str) -> Response:
    server = provider.get_server(server_id)
    if server is None:
        return not_found("Instance", server_id)
    return Response(200, {"metadata": dict(server.metadata)})


def _write_metadata(provider: Provider, req: Request, server_id: str, replace: bool) -> Response:
    body = req.json()
    metadata = body.get("metadata") if isinstance(body, dict) else None
    problem = validate_metadata(metadata)
    if problem:
        return problem
    result = provider.update_metadata(server_id, metadata, replace)
    if result is None:
        return not_found("Instance", server_id)
    return Response(200, {"metadata": result})


@router.route("POST", "/v2.1/servers/{}/metadata", "server_metadata")
@versioned
def merge_metadata(provider: Provider, req: Request, mv: tuple[int, int], server_id: str) -> Response:
    return _write_metadata(provider, req, server_id, replace=False)


@router.route("PUT", "/v2.1/servers/{}/metadata", "server_metadata")
@versioned
def replace_metadata(provider: Provider, req: Request, mv: tuple[int, int], server_id: str) -> Response:
    return _write_metadata(provider, req, server_id, replace=True)


@router.route("DELETE", "/v2.1/servers/{}/metadata/{}", "server_metadata")
@versioned
def delete_metadata(provider: Provider, req: Request, mv: tuple[int, int], server_id: str, key: str) -> Response:
    result = provider.delete_metadata_key(server_id, key)
    if result is None:
        return not_found("Instance", server_id)
    if not result:
        return error(404, "Metadata item was not found")
    return Response(204)


SERVICE = Service(prefix="compute", router=router, error=error)
