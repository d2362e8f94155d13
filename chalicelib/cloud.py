"""The cloud adapter: the only module that imports openstacksdk.

Connections are cached per provider (and credential version) for the life of the process, so a
warm function reuses its token. Every call has a timeout (connect and each read). Exceptions are mapped
to the error classes of DESIGN.md, which is all the rest of the code ever sees of OpenStack.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import openstack
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from chalicelib import addresses, credentials, governor, models, telemetry
from chalicelib.addresses import Address

# The error classes and CloudError live in faults (importable without openstacksdk); the rest of
# the code reads them through this adapter or from there.
from chalicelib.faults import (  # noqa: F401 - re-exported as the adapter's vocabulary
    AUTH,
    BUILD_FAILED,
    CAPACITY,
    CONFIG,
    QUOTA,
    RATE_LIMITED,
    TIMEOUT,
    UNAVAILABLE,
    UNKNOWN,
    UNREACHABLE,
    CloudError,
)
from chalicelib.settings import settings


@dataclass(frozen=True)
class Limits:
    max_instances: int
    used_instances: int


@dataclass(frozen=True)
class Quota:
    limit: int  # -1: unlimited
    used: int


_lock = threading.Lock()


def _is_v2(auth_url: str) -> bool:
    return urlsplit(auth_url).path.rstrip("/").endswith("/v2.0")


def _auth_args(provider: models.Provider, secret: dict[str, str]) -> tuple[str, dict]:
    if provider.auth_type == "application_credential":
        return "v3applicationcredential", {
            "auth_url": provider.auth_url,
            "application_credential_id": provider.application_credential_id,
            "application_credential_secret": secret["application_credential_secret"],
        }
    args = {
        "auth_url": provider.auth_url,
        "username": provider.username,
        "password": secret["password"],
        "project_name": provider.project_name,
        "project_id": provider.project_id,
    }
    # Keystone v2.0 knows no domains, and keystoneauth refuses v2 when one is given.
    if not _is_v2(provider.auth_url):
        args["user_domain_name"] = provider.user_domain_name or "Default"
        args["project_domain_name"] = provider.project_domain_name or "Default"
    return "password", {k: v for k, v in args.items() if v is not None}


@functools.lru_cache(maxsize=256)
def _connection(name: str, secret_version: str, settings_key: tuple) -> openstack.connection.Connection:
    provider = models.Provider.get(name)
    # The version this connection is cached under, not whatever the item says by now.
    secret = credentials.load(name, secret_version)
    auth_type, auth = _auth_args(provider, secret)
    made = openstack.connect(
        load_yaml_config=False,
        load_envvars=False,
        auth_type=auth_type,
        auth=auth,
        region_name=provider.region,
        interface=provider.interface,
        verify=provider.verify_tls,
        # keystoneauth takes one timeout, for connecting and for each read alike.
        api_timeout=settings.openstack_timeout_seconds,
        connect_retries=0,
        status_code_retries=0,
    )
    # Every HTTP request of the connection (tokens and discovery too) goes through the governor.
    for adapter in {id(a): a for a in made.session.session.adapters.values()}.values():  # one for http and https
        adapter.send = functools.partial(governor.send, adapter.send)
    return made


def connection(provider: models.Provider) -> openstack.connection.Connection:
    # Keyed by everything a connection depends on, so a PATCH (rotation included) gets a new one.
    key = (
        provider.auth_url,
        provider.region,
        provider.interface,
        provider.verify_tls,
        provider.auth_type,
        provider.username,
        provider.application_credential_id,
        provider.project_name,
        provider.project_id,
        provider.user_domain_name,
        provider.project_domain_name,
    )
    with _lock:
        return _connection(provider.name, provider.secret_version, key)


# What services say, in their own words (REAL-CLOUDS.md), when the answer's status alone misleads.
# A quota reached through Nova on ports: 403 without the word "quota".
_QUOTA_WORDS = ("maximum number of ports exceeded",)
# Nova's faults for no room anywhere (its scheduler's, and its retry limit's).
_CAPACITY_WORDS = ("no valid host", "exhausted all hosts available")
# The label's settings do not fit this cloud (409s and 403s included): fix them, never "unknown".
_CONFIG_WORDS = (
    "more than one possible network",
    "multiple possible networks found",
    "unable to automatically allocate a network",
    "only volume-backed servers are allowed",
    "is not reachable from subnet",
)


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    return governor.retry_after(response.headers.get("Retry-After")) if response is not None else None


def classify(error: Exception) -> CloudError:
    """Map an openstacksdk/keystoneauth exception to an error class (DESIGN.md's table)."""
    if isinstance(error, CloudError):
        return error
    # openstacksdk keeps the service's own words (e.g. Nova's "Quota exceeded ...") in `details`.
    details = getattr(error, "details", None)
    message = (str(details) if details else str(error)).strip() or error.__class__.__name__
    text = message.lower()
    if isinstance(error, ks_exc.Unauthorized | ks_exc.EmptyCatalog | ks_exc.EndpointNotFound | ks_exc.NoMatchingPlugin):
        return CloudError(AUTH, message)
    if isinstance(
        error, ks_exc.ConnectFailure | ks_exc.ConnectionError | ks_exc.RequestTimeout | ks_exc.DiscoveryFailure
    ):
        return CloudError(UNAVAILABLE, message)
    status = getattr(error, "status_code", None) or getattr(error, "http_status", None)
    if status == 429:
        return CloudError(RATE_LIMITED, message, retry_after=_retry_after(error))
    if ("quota" in text and ("exceed" in text or status in (403, 413))) or any(w in text for w in _QUOTA_WORDS):
        return CloudError(QUOTA, message)
    if status == 413 and (_retry_after(error) is not None or "overlimit" in text):
        # An older Nova's rate limit (its absolute-limit 413s say "quota": those are quota, above).
        return CloudError(RATE_LIMITED, message, retry_after=_retry_after(error))
    if any(words in text for words in _CAPACITY_WORDS):
        return CloudError(CAPACITY, message)
    if any(words in text for words in _CONFIG_WORDS):
        return CloudError(CONFIG, message)
    if status == 401:
        return CloudError(AUTH, message)
    if status in (400, 404) or isinstance(error, os_exc.ResourceNotFound | os_exc.BadRequestException):
        return CloudError(CONFIG, message)
    if status is not None and status >= 500:
        # A gateway's 502/504 says nothing of whether the service behind it acted.
        return CloudError(UNAVAILABLE, message, uncertain=status in (502, 504))
    if isinstance(error, os_exc.ResourceTimeout):
        return CloudError(TIMEOUT, message)
    return CloudError(UNKNOWN, message, uncertain=True)


def _operation(name: str):
    """Trace the decorated call on its provider (first argument) as `openstack.<name>`; its HTTP
    requests are governed as that provider's (each in its turn, sent again after a 429)."""

    def wrap(function):
        @functools.wraps(function)
        def call(provider: models.Provider, *args, **kwargs):
            with telemetry.provider_call(provider.name, name):
                return governor.call(provider, function, *args, **kwargs)

        return call

    return wrap


@_operation("limits")
def limits(provider: models.Provider) -> Limits:
    """Authenticate and read the provider's instance quota (`GET /limits`)."""
    try:
        absolute = connection(provider).compute.get_limits().absolute
        return Limits(int(absolute.instances), int(absolute.instances_used))
    except Exception as error:  # every failure leaves this module classified
        raise classify(error) from error


@_operation("authenticate")
def authenticate(provider: models.Provider) -> None:
    """Get a token (or prove the cached one): Keystone answers with the service catalog."""
    try:
        connection(provider).authorize()
    except Exception as error:
        raise classify(error) from error


@_operation("floating_ip_quota")
def floating_ip_quota(provider: models.Provider) -> Quota:
    """The project's floating IP quota and how many it holds, whoever made them (Neutron's quota
    details: Nova's `/limits` says nothing of network quotas since microversion 2.36). A Neutron
    without usage details counts as unlimited."""
    try:
        conn = connection(provider)
        details = conn.network.get_quota(conn.current_project_id, details=True).floating_ips or {}
        return Quota(int(details.get("limit", -1)), int(details.get("used", 0)))
    except Exception as error:
        raise classify(error) from error


# --- servers -------------------------------------------------------------------------------

META_INSTANCE, META_REQUEST = "oms_instance_id", "oms_request_id"
META_DEPLOYMENT, META_EXPIRES = "oms_deployment", "oms_expires_at"


@dataclass(frozen=True)
class Resolved:
    image_id: str
    flavor_id: str
    network_id: str | None
    security_groups: tuple[str, ...]
    volume_size: int | None = None
    config_drive: bool = False


@dataclass(frozen=True)
class Server:
    """What we need of a server: its id, status, our tags, addresses, fault."""

    id: str
    status: str
    metadata: dict
    addresses: tuple[Address, ...]
    fault: str | None

    @property
    def instance_id(self) -> str | None:
        return self.metadata.get(META_INSTANCE)

    @property
    def expires_at(self) -> str | None:
        return self.metadata.get(META_EXPIRES)


_resolved: dict[tuple, Resolved] = {}


@_operation("resolve")
def resolve(provider: models.Provider, label: str) -> Resolved:
    """The label's image, flavor and network as ids on this provider (cached per mapping)."""
    mapping = provider.labels.as_dict().get(label)
    if mapping is None:
        raise CloudError(CONFIG, f"label {label} is not mapped on provider {provider.name}")
    key = (provider.name, provider.auth_url, label, json.dumps(mapping, sort_keys=True))
    if key in _resolved:
        return _resolved[key]
    try:
        conn = connection(provider)
        image = conn.image.find_image(mapping["image"], ignore_missing=False)
        flavor = conn.compute.find_flavor(mapping["flavor"], ignore_missing=False)
        network = (
            conn.network.find_network(mapping["network"], ignore_missing=False) if mapping.get("network") else None
        )
    except Exception as error:
        raise classify(error) from error
    resolved = Resolved(
        image.id,
        flavor.id,
        network.id if network else None,
        tuple(mapping.get("security_groups") or ()),
        int(mapping["volume_size"]) if mapping.get("volume_size") else None,
        bool(mapping.get("config_drive")),
    )
    _resolved[key] = resolved
    return resolved


_ensured: set[tuple] = set()
_ensuring = threading.Lock()


def _ssh_ports(provider: models.Provider) -> list[int]:
    labels = provider.labels.as_dict() if hasattr(provider.labels, "as_dict") else dict(provider.labels)
    return sorted({22, *(int(m["ssh_port"]) for m in labels.values() if m.get("ssh_port"))})


def _ensure_ssh_group(provider: models.Provider) -> None:
    """Make the provider's SSH security group if missing, with tcp ingress on the SSH ports for
    IPv4 and IPv6; add the rules it lacks. Once per process, group and ports."""
    ports = _ssh_ports(provider)
    key = (provider.name, provider.auth_url, provider.ssh_security_group, tuple(ports))
    if key in _ensured:
        return
    with _ensuring:  # parallel creates of one batch must not make the group twice
        if key not in _ensured:
            _ensure_ssh_group_now(provider, ports)
            _ensured.add(key)


def _ensure_ssh_group_now(provider: models.Provider, ports: list[int]) -> None:
    try:
        network = connection(provider).network
        group = network.find_security_group(provider.ssh_security_group)
        if group is None:
            group = network.create_security_group(
                name=provider.ssh_security_group, description="OpenMultiStack: SSH in, for IPv4 and IPv6"
            )
        have = {
            (rule.ether_type, rule.port_range_min, rule.port_range_max)
            for rule in network.security_group_rules(security_group_id=group.id, direction="ingress")
            if rule.protocol in ("tcp", "6")
        }
        for ether_type in ("IPv4", "IPv6"):
            for port in ports:
                if (ether_type, port, port) not in have:
                    try:
                        network.create_security_group_rule(
                            security_group_id=group.id,
                            direction="ingress",
                            ether_type=ether_type,
                            protocol="tcp",
                            port_range_min=port,
                            port_range_max=port,
                        )
                    except os_exc.ConflictException:
                        pass  # made meanwhile ("Security group rule already exists"): as good
    except CloudError:
        raise
    except Exception as error:
        raise classify(error) from error


def server_metadata(instance_id: str, request_id: str, expires_at: str) -> dict[str, str]:
    return {
        META_INSTANCE: instance_id,
        META_REQUEST: request_id,
        META_DEPLOYMENT: settings.deployment,
        META_EXPIRES: expires_at,
    }


@_operation("create_server")
def create_server(
    provider: models.Provider,
    *,
    name: str,
    label: str,
    metadata: dict[str, str],
    user_data: str | None,
) -> str:
    """Create one server; returns its id. Raises CloudError."""
    resolved = resolve(provider, label)
    kwargs = {
        "name": name,
        "flavor_id": resolved.flavor_id,
        "metadata": metadata,
        "networks": [{"uuid": resolved.network_id}] if resolved.network_id else "auto",
    }
    if resolved.volume_size:
        # Boot from a volume made from the image, deleted with the server (no leaked volume).
        kwargs["block_device_mapping"] = [
            {
                "boot_index": 0,
                "uuid": resolved.image_id,
                "source_type": "image",
                "destination_type": "volume",
                "volume_size": resolved.volume_size,
                "delete_on_termination": True,
            }
        ]
    else:
        kwargs["image_id"] = resolved.image_id
    if resolved.config_drive:
        kwargs["config_drive"] = True
    groups = list(resolved.security_groups)
    if provider.ssh_security_group:
        _ensure_ssh_group(provider)
        # Beside the label's groups, or the default one that a server gets when none is named.
        groups = [*(groups or ["default"]), provider.ssh_security_group]
    if groups:
        kwargs["security_groups"] = [{"name": group} for group in dict.fromkeys(groups)]
    if user_data:
        kwargs["user_data"] = base64.b64encode(user_data.encode()).decode()
    try:
        return connection(provider).compute.create_server(**kwargs).id
    except Exception as error:
        failure = classify(error)
        if failure.error_class == CONFIG:
            # The image, flavor or network may have been replaced under the same name: resolve anew.
            for key in [k for k in _resolved if k[0] == provider.name and k[2] == label]:
                _resolved.pop(key, None)
        raise failure from error


def _server(raw: dict) -> Server:
    fault = raw.get("fault")
    return Server(
        raw["id"],
        raw.get("status", ""),
        dict(raw.get("metadata") or {}),
        addresses.typed(raw.get("addresses")),
        fault.get("message") if isinstance(fault, dict) else None,
    )


def _next_page(links: list[dict] | None) -> str | None:
    return next((link["href"] for link in links or () if link.get("rel") == "next"), None)


@_operation("list_servers")
def our_servers(provider: models.Provider) -> list[Server]:
    """Every server of this deployment on the provider: one `GET /servers/detail` per page of
    1,000 (Nova's `servers_links` lead to the next). The JSON is read as it is: building
    openstacksdk's resource objects for every server cost more CPU than the rest of a poll."""
    compute = connection(provider).compute
    raw: list[dict] = []
    url: str | None = "/servers/detail"
    try:
        while url:
            response = compute.get(url)
            os_exc.raise_from_response(response)  # openstacksdk's proxy returns error responses as they are
            body = response.json()
            raw.extend(body["servers"])  # a reply without the list is an error, never "no servers"
            url = _next_page(body.get("servers_links"))
    except Exception as error:
        raise classify(error) from error
    servers = [_server(s) for s in raw]
    return [s for s in servers if s.metadata.get(META_DEPLOYMENT) == settings.deployment]


def find_server(provider: models.Provider, instance_id: str) -> Server | None:
    """The server created for `instance_id`, found by its metadata (to adopt after a crash)."""
    return next((s for s in our_servers(provider) if s.instance_id == instance_id), None)


@_operation("get_server")
def get_server(provider: models.Provider, server_id: str) -> Server | None:
    """One server by id (`GET /servers/{id}`), or None once it is gone."""
    try:
        response = connection(provider).compute.get(f"/servers/{server_id}")
        if response.status_code == 404:
            return None
        os_exc.raise_from_response(response)
        return _server(response.json()["server"])
    except Exception as error:
        raise classify(error) from error


@_operation("set_expiry")
def set_expiry(provider: models.Provider, server_id: str, expires_at: str) -> None:
    """Update a server's `oms_expires_at` metadata (no other key is touched)."""
    try:
        connection(provider).compute.set_server_metadata(server_id, **{META_EXPIRES: expires_at})
    except Exception as error:
        raise classify(error) from error


# --- floating IPs ------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatingIp:
    id: str
    address: str
    instance_id: str | None  # from its description: whose it is, so the sweeper can find leaks


def _floating_description(instance_id: str) -> str:
    # Neutron filters and tags differ between clouds; every floating IP has a description.
    return f"oms:{settings.deployment}:{instance_id}"


def _external_network(conn, provider: models.Provider):
    if provider.floating_network:
        return conn.network.find_network(provider.floating_network, ignore_missing=False)
    network = next(iter(conn.network.networks(is_router_external=True)), None)
    if network is None:
        raise CloudError(CONFIG, f"no external network on {provider.name} to take floating IPs from")
    return network


def _port_and_left(conn, server_id: str, instance_id: str) -> tuple:
    """The server's port, and the floating IP on it described as the instance's if there is one:
    a pass that died between attaching and recording left it there."""
    port = next(iter(conn.network.ports(device_id=server_id)), None)
    if port is None:
        return None, None
    ours = _floating_description(instance_id)
    return port, next((ip for ip in conn.network.ips(port_id=port.id) if ip.description == ours), None)


@_operation("floating_ip_attach")
def attach_floating_ip(provider: models.Provider, server_id: str, instance_id: str) -> FloatingIp:
    """Take a floating IP from the external network onto the server's port, described with the
    instance it is for (a crash before it is recorded leaves it findable). One left on the port
    for the instance is given instead: Neutron refuses a port a second one (409)."""
    try:
        conn = connection(provider)
        network = _external_network(conn, provider)
        port, made = _port_and_left(conn, server_id, instance_id)
        if port is None:
            raise CloudError(BUILD_FAILED, f"server {server_id} has no port to attach a floating IP to")
        if made is None:
            made = conn.network.create_ip(
                floating_network_id=network.id, port_id=port.id, description=_floating_description(instance_id)
            )
    except CloudError:
        raise
    except Exception as error:
        raise classify(error) from error
    return FloatingIp(made.id, made.floating_ip_address, instance_id)


@_operation("floating_ip_find")
def left_floating_ip(provider: models.Provider, server_id: str, instance_id: str) -> FloatingIp | None:
    """The floating IP attached for the instance but never recorded (see `_port_and_left`), if any."""
    try:
        _, left = _port_and_left(connection(provider), server_id, instance_id)
    except Exception as error:
        raise classify(error) from error
    return None if left is None else FloatingIp(left.id, left.floating_ip_address, instance_id)


@_operation("floating_ip_list")
def our_floating_ips(provider: models.Provider) -> list[FloatingIp]:
    """This deployment's floating IPs on the provider (one list call)."""
    prefix = _floating_description("")
    try:
        found = list(connection(provider).network.ips())
    except Exception as error:
        raise classify(error) from error
    return [
        FloatingIp(ip.id, ip.floating_ip_address, (ip.description or "")[len(prefix) :] or None)
        for ip in found
        if (ip.description or "").startswith(prefix)
    ]


@_operation("floating_ip_release")
def release_floating_ip(provider: models.Provider, floating_ip_id: str) -> None:
    """Give a floating IP back; one that is already gone counts as released."""
    try:
        connection(provider).network.delete_ip(floating_ip_id, ignore_missing=True)
    except Exception as error:
        raise classify(error) from error


@_operation("networks")
def candidate_networks(provider: models.Provider) -> list[str]:
    """The networks Nova would choose among for a server that names none: the project's own and
    shared ones (an external network that is not shared is not a candidate)."""
    try:
        found = list(connection(provider).network.networks())
    except Exception as error:
        raise classify(error) from error
    return sorted(n.name or n.id for n in found if n.is_shared or not n.is_router_external)


@_operation("console_output")
def console_output(provider: models.Provider, server_id: str) -> str:
    """The server's console log (what cloud-init printed: its SSH host keys among it)."""
    try:
        answer = connection(provider).compute.get_server_console_output(server_id)
    except Exception as error:
        raise classify(error) from error
    return (answer or {}).get("output") or ""


@_operation("delete_server")
def delete_server(provider: models.Provider, server_id: str) -> None:
    """Delete a server; one that is already gone counts as deleted."""
    try:
        connection(provider).compute.delete_server(server_id, ignore_missing=True)
    except Exception as error:
        raise classify(error) from error


def classify_fault(fault: str | None) -> CloudError:
    """A server that went ERROR: no valid host is a capacity problem, anything else a failed build."""
    message = fault or "server went to ERROR"
    if any(words in message.lower() for words in _CAPACITY_WORDS):
        return CloudError(CAPACITY, message)
    return CloudError(BUILD_FAILED, message)
