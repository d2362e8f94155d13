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
class Quota:
    limit: int  # -1: unlimited
    used: int  # by the whole project, whoever made it


@dataclass(frozen=True)
class Limits:
    """The project's compute quotas (`GET /limits`)."""

    instances: Quota
    cores: Quota
    ram_mb: Quota


@dataclass(frozen=True)
class NetworkQuota:
    """The project's Neutron quotas that each instance of ours uses one of."""

    floating_ips: Quota
    ports: Quota


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
    """The provider's cached connection. A token that expires or is revoked mid-work needs
    nothing here: keystoneauth's session authenticates again and retries once on a 401."""
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


@dataclass(frozen=True)
class Rule:
    """One row of what a service's answer means: the exception kinds or HTTP statuses it applies
    to (none: any), phrases of which one must be in the service's message (none: any; "a ... b"
    is `a`, then later `b`), or a header the answer must carry; `said` is the source's words
    (REAL-CLOUDS.md unless named), so each row can be checked against what real clouds send."""

    error_class: str
    said: str
    kinds: tuple[type, ...] = ()
    statuses: tuple[int, ...] = ()
    phrases: tuple[str, ...] = ()
    header: str | None = None
    uncertain: bool = False  # the request may have been carried out all the same

    def matches(self, error: Exception, status: int | None, text: str, headers) -> bool:
        return (
            (not self.kinds or isinstance(error, self.kinds))
            and (not self.statuses or status in self.statuses)
            and (not self.phrases or any(_says(text, phrase) for phrase in self.phrases))
            and (self.header is None or self.header in headers)
        )


def _says(text: str, phrase: str) -> bool:
    at = 0
    for part in phrase.split(" ... "):
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


_AUTH_KINDS = (ks_exc.Unauthorized, ks_exc.EmptyCatalog, ks_exc.EndpointNotFound, ks_exc.NoMatchingPlugin)
_NOT_REACHED = (ks_exc.ConnectFailure, ks_exc.ConnectionError, ks_exc.DiscoveryFailure)

# First row that matches wins: the service's words before its status, which alone misleads (a
# quota is 403 or 409 or 413, a config error 400, 403 or 409). Phrases are matched on the message
# lowercased, the response body included (an old Nova's 413 names its fault `overLimit` there).
RULES = (
    Rule(
        QUOTA,
        'Nova 403 "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances" (and cores, '
        "ram); Neutron 409 \"Quota exceeded for resources: ['port']\" / ['floatingip']",
        phrases=("quota exceeded", "exceeds ... quota", "over quota"),
    ),
    Rule(
        QUOTA,
        'Nova 403 "Maximum number of ports exceeded" (a port quota, no word quota)',
        phrases=("maximum number of ports exceeded",),
    ),
    Rule(
        QUOTA,
        'older Nova: 413 "Quota exceeded" wording varies; any 403/413 naming a quota',
        statuses=(403, 413),
        phrases=("quota",),
    ),
    Rule(RATE_LIMITED, 'OVH: 429 {"error": {"status": "429 Too Many Requests", ...}}', statuses=(429,)),
    Rule(
        RATE_LIMITED,
        'older Nova and Rackspace: 413 "overLimit" with Retry-After',
        statuses=(413,),
        phrases=("overlimit", "rate limit", "rate-limited"),
    ),
    Rule(RATE_LIMITED, "a 413 with Retry-After asks us to come back later", statuses=(413,), header="retry-after"),
    Rule(
        CAPACITY,
        'fault "No valid host was found. ...", "Exceeded maximum number of retries. Exhausted all '
        'hosts available for retrying build failures for instance ..."',
        phrases=("no valid host", "exhausted all hosts available"),
    ),
    Rule(BUILD_FAILED, 'fault "Build of instance ... aborted: ..."', phrases=("build of instance ... aborted",)),
    Rule(
        CONFIG,
        'Nova 409 "More than one possible network found. Specify network ID(s)...", older Nova "Multiple '
        'possible networks found, use a Network ID to be more specific.", 400 "Unable to automatically allocate '
        'a network..."',
        phrases=(
            "more than one possible network",
            "multiple possible networks found",
            "unable to automatically allocate a network",
        ),
    ),
    Rule(
        CONFIG,
        'Nova 403 "Only volume-backed servers are allowed for flavors with zero disk."',
        phrases=("only volume-backed servers are allowed",),
    ),
    Rule(
        CONFIG,
        'Neutron 404 "External network ... is not reachable from subnet ..."',
        phrases=("external network ... is not reachable from subnet",),
    ),
    Rule(
        CONFIG,
        'Nova 403 "It is not allowed to create an interface on external network <id>" (sim/README.md)',
        phrases=("not allowed to create an interface on external network",),
    ),
    # A lock is somebody's for a while (an admin's, a backup's): try again later, as teardown's
    # back-off does; nothing about the provider's health.
    Rule(
        UNAVAILABLE,
        'Nova 409 "Instance ... is locked" (on delete)',
        statuses=(409,),
        phrases=("instance ... is locked",),
    ),
    Rule(AUTH, '401, token/catalog failures ("authenticate again and retry once" comes first)', kinds=_AUTH_KINDS),
    Rule(AUTH, "401 from a service: the token was refused", statuses=(401,)),
    Rule(
        UNAVAILABLE,
        'a read timeout (keystoneauth: "Request to ... timed out"): the request may have been carried out',
        kinds=(ks_exc.ConnectTimeout,),
        uncertain=True,
    ),
    Rule(
        UNAVAILABLE,
        'connection dropped after sending ("Connection aborted.", "Remote end closed connection '
        'without response", reset): the answer was lost',
        kinds=(ks_exc.ConnectFailure,),
        phrases=("connection aborted", "remote end closed", "connection reset"),
        uncertain=True,
    ),
    Rule(UNAVAILABLE, "connection refused, TLS, discovery failures: the request never arrived", kinds=_NOT_REACHED),
    Rule(CONFIG, "400/404 image, flavor or network not found", statuses=(400, 404)),
    Rule(
        CONFIG,
        "openstacksdk's not-found and bad-request kinds",
        kinds=(os_exc.ResourceNotFound, os_exc.BadRequestException),
    ),
    Rule(
        UNAVAILABLE,
        '"Nova can answer 500 and create the server anyway; a gateway\'s 502/504 says nothing either way"',
        statuses=(500, 502, 504),
        uncertain=True,
    ),
    Rule(UNAVAILABLE, "503 maintenance and other 5xx: refused before acting", statuses=tuple(range(501, 600))),
    Rule(TIMEOUT, "openstacksdk gave up waiting (ResourceTimeout)", kinds=(os_exc.ResourceTimeout,)),
)


def _status(error: Exception) -> int | None:
    return getattr(error, "status_code", None) or getattr(error, "http_status", None)


def classify(error: Exception) -> CloudError:
    """Map an openstacksdk/keystoneauth exception to an error class: the first row of RULES it
    matches, else `unknown` (uncertain: nothing says the request was not carried out)."""
    if isinstance(error, CloudError):
        return error
    # openstacksdk keeps the service's own words (e.g. Nova's "Quota exceeded ...") in `details`.
    details = getattr(error, "details", None)
    message = (str(details) if details else str(error)).strip() or error.__class__.__name__
    response = getattr(error, "response", None)
    headers = {k.lower(): v for k, v in (response.headers if response is not None else {}).items()}
    text = f"{message}\n{response.text if response is not None else ''}".lower()
    status = _status(error)
    rule = next((r for r in RULES if r.matches(error, status, text, headers)), None)
    if rule is None:
        return CloudError(UNKNOWN, message, uncertain=True)
    retry_after = governor.retry_after(headers.get("retry-after")) if rule.error_class == RATE_LIMITED else None
    return CloudError(rule.error_class, message, uncertain=rule.uncertain, retry_after=retry_after)


def _operation(name: str):
    """Trace the decorated call on its provider (first argument) as `openstack.<name>`; its HTTP
    requests are governed as that provider's (each in its turn, sent again after a 429), and
    whatever it raises reaches the caller classified (a CloudError)."""

    def wrap(function):
        @functools.wraps(function)
        def call(provider: models.Provider, *args, **kwargs):
            with telemetry.provider_call(provider.name, name):
                try:
                    return governor.call(provider, function, *args, **kwargs)
                except CloudError:
                    raise
                except Exception as error:  # every failure leaves this module classified
                    raise classify(error) from error

        return call

    return wrap


def _quota(limit, used) -> Quota:
    """A quota as a cloud reports it; one it leaves out limits nothing."""
    return Quota(-1 if limit is None else int(limit), int(used or 0))


@_operation("limits")
def limits(provider: models.Provider) -> Limits:
    """Authenticate and read the provider's instance, vCPU and RAM quotas (`GET /limits`)."""
    absolute = connection(provider).compute.get_limits().absolute
    return Limits(
        _quota(absolute.instances, absolute.instances_used),
        _quota(absolute.total_cores, absolute.total_cores_used),
        _quota(absolute.total_ram, absolute.total_ram_used),
    )


@_operation("authenticate")
def authenticate(provider: models.Provider) -> None:
    """Get a token (or prove the cached one): Keystone answers with the service catalog."""
    connection(provider).authorize()


@_operation("network_quota")
def network_quota(provider: models.Provider) -> NetworkQuota:
    """The project's floating IP and port quotas and how many it holds, whoever made them, in one
    call (Neutron's quota details: Nova's `/limits` says nothing of network quotas since
    microversion 2.36). A Neutron without usage details counts as unlimited."""
    conn = connection(provider)
    quota = conn.network.get_quota(conn.current_project_id, details=True)
    floating_ips, ports = quota.floating_ips or {}, quota.ports or {}
    return NetworkQuota(
        _quota(floating_ips.get("limit"), floating_ips.get("used")), _quota(ports.get("limit"), ports.get("used"))
    )


# --- servers -------------------------------------------------------------------------------

META_INSTANCE, META_REQUEST = "oms_instance_id", "oms_request_id"
META_DEPLOYMENT, META_EXPIRES = "oms_deployment", "oms_expires_at"


@dataclass(frozen=True)
class Flavor:
    """A label's flavor on one provider and what one server of it takes of the quotas."""

    id: str
    vcpus: int
    ram_mb: int


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
    task_state: str | None = None  # Nova's OS-EXT-STS:task_state

    @property
    def deleting(self) -> bool:
        """A delete is under way (it can take long, and the server counts on quota meanwhile)."""
        return self.task_state == "deleting"

    @property
    def instance_id(self) -> str | None:
        return self.metadata.get(META_INSTANCE)

    @property
    def expires_at(self) -> str | None:
        return self.metadata.get(META_EXPIRES)


# Resolutions and flavors, cached for the life of the process: a label's images and flavors
# change rarely, and a launch or check must not list them each time. `forget` drops them.
_resolved: dict[tuple, Resolved] = {}
_flavors: dict[tuple, Flavor] = {}


def _mapping(provider: models.Provider, label: str) -> dict:
    mapping = provider.labels.as_dict().get(label)
    if mapping is None:
        raise CloudError(CONFIG, f"label {label} is not mapped on provider {provider.name}")
    return mapping


def forget(provider: models.Provider, label: str | None = None) -> None:
    """Drop what was resolved for the label (every label when None) on this provider: its image
    or flavor was replaced, or a quota error says the figures the check used were wrong."""
    for cache in (_resolved, _flavors):
        for key in [k for k in cache if k[0] == provider.name and label in (None, k[2])]:
            cache.pop(key, None)


def _image_property(image, key: str):
    """A property as Glance shows it: openstacksdk keeps the ones it knows (os_distro, ...) as
    attributes and the rest in `properties`."""
    extra = image.properties or {}
    return extra[key] if key in extra else getattr(image, key, None)


def _find_image(conn, provider: models.Provider, wanted: str | dict):
    """The label's image: by name (the newest of those with it: clouds rotate images and keep the
    name, and openstacksdk's find_image refuses two), else by id; or the newest active image with
    every property asked for (`{"os_distro": "ubuntu", "os_version": "22.04"}`), whatever it is named."""
    if isinstance(wanted, dict):
        found = [
            i
            for i in conn.image.images()
            if all(str(_image_property(i, key)) == str(value) for key, value in wanted.items())
        ]
        what = "with " + ", ".join(f"{key}={value}" for key, value in sorted(wanted.items()))
    else:
        found = list(conn.image.images(name=wanted))
        what = f"named {wanted}"
        if not found:
            try:
                return conn.image.get_image(wanted)
            except os_exc.NotFoundException:
                raise CloudError(CONFIG, f"no image named or with id {wanted} on {provider.name}") from None
    found = [i for i in found if i.status == "active"]
    if not found:
        raise CloudError(CONFIG, f"no active image {what} on {provider.name}")
    return max(found, key=lambda i: (i.created_at or "", i.id))


def _find_flavor(conn, provider: models.Provider, wanted: str | dict, boot_volume: bool):
    """The label's flavor: by name or id; or the smallest (vCPUs, then RAM, then disk) enabled one
    with at least `min_vcpus` and `min_ram_mb`, leaving out 0 GB-disk flavors unless the label
    boots from a volume (Nova refuses an image boot on them)."""
    if not isinstance(wanted, dict):
        return conn.compute.find_flavor(wanted, ignore_missing=False)
    fits = [
        f
        for f in conn.compute.flavors(details=True)
        if not f.is_disabled
        and int(f.vcpus) >= int(wanted.get("min_vcpus", 0))
        and int(f.ram) >= int(wanted.get("min_ram_mb", 0))
        and (boot_volume or int(f.disk or 0) > 0)
    ]
    if not fits:
        asked = ", ".join(f"{key} {value}" for key, value in sorted(wanted.items()))
        raise CloudError(CONFIG, f"no flavor with {asked} on {provider.name}")
    return min(fits, key=lambda f: (int(f.vcpus), int(f.ram), int(f.disk or 0), f.name))


@_operation("flavor")
def flavor(provider: models.Provider, label: str) -> Flavor:
    """The label's flavor on this provider, with its vCPUs and RAM (cached per flavor asked for)."""
    mapping = _mapping(provider, label)
    boot_volume = bool(mapping.get("volume_size"))
    key = (provider.name, provider.auth_url, label, json.dumps(mapping["flavor"], sort_keys=True), boot_volume)
    if key not in _flavors:
        try:
            found = _find_flavor(connection(provider), provider, mapping["flavor"], boot_volume)
        except CloudError:
            raise
        except Exception as error:
            raise classify(error) from error
        _flavors[key] = Flavor(found.id, int(found.vcpus), int(found.ram))
    return _flavors[key]


@_operation("resolve")
def resolve(provider: models.Provider, label: str) -> Resolved:
    """The label's image, flavor and network as ids on this provider (cached per mapping)."""
    mapping = _mapping(provider, label)
    key = (provider.name, provider.auth_url, label, json.dumps(mapping, sort_keys=True))
    if key in _resolved:
        return _resolved[key]
    conn = connection(provider)
    image = _find_image(conn, provider, mapping["image"])
    network = conn.network.find_network(mapping["network"], ignore_missing=False) if mapping.get("network") else None
    resolved = Resolved(
        image.id,
        flavor(provider, label).id,
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


def _create_kwargs(provider: models.Provider, resolved: Resolved, name: str, metadata, user_data) -> dict:
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
    return kwargs


def _create(provider: models.Provider, resolved: Resolved, name: str, metadata, user_data) -> str:
    try:
        return (
            connection(provider)
            .compute.create_server(**_create_kwargs(provider, resolved, name, metadata, user_data))
            .id
        )
    except Exception as error:
        failure = classify(error)
        if failure.error_class == QUOTA:
            # The footprints the check used may be stale: read every one again with the quotas.
            forget(provider)
        raise failure from error


@_operation("create_server")
def create_server(
    provider: models.Provider,
    *,
    name: str,
    label: str,
    metadata: dict[str, str],
    user_data: str | None,
) -> str:
    """Create one server; returns its id. Raises CloudError.

    A configuration error (400/404: an image or flavor replaced, renamed or deleted since it was
    resolved) drops the label's resolution and resolves it again; when that finds other ids the
    create is tried once more with them (a refused create made nothing), so a rotated image costs
    no failover. A quota error drops the provider's flavors (`_create`)."""
    resolved = resolve(provider, label)
    try:
        return _create(provider, resolved, name, metadata, user_data)
    except CloudError as failure:
        if failure.error_class != CONFIG:
            raise
        forget(provider, label)
        again = resolve(provider, label)
        if again == resolved:
            raise
    return _create(provider, again, name, metadata, user_data)


def _server(raw: dict) -> Server:
    fault = raw.get("fault")
    return Server(
        raw["id"],
        raw.get("status", ""),
        dict(raw.get("metadata") or {}),
        addresses.typed(raw.get("addresses")),
        fault.get("message") if isinstance(fault, dict) else None,
        raw.get("OS-EXT-STS:task_state"),
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
    while url:
        response = compute.get(url)
        os_exc.raise_from_response(response)  # openstacksdk's proxy returns error responses as they are
        body = response.json()
        raw.extend(body["servers"])  # a reply without the list is an error, never "no servers"
        url = _next_page(body.get("servers_links"))
    servers = [_server(s) for s in raw]
    return [s for s in servers if s.metadata.get(META_DEPLOYMENT) == settings.deployment]


def find_server(provider: models.Provider, instance_id: str) -> Server | None:
    """The server created for `instance_id`, found by its metadata (to adopt after a crash)."""
    return next((s for s in our_servers(provider) if s.instance_id == instance_id), None)


@_operation("get_server")
def get_server(provider: models.Provider, server_id: str) -> Server | None:
    """One server by id (`GET /servers/{id}`), or None once it is gone."""
    response = connection(provider).compute.get(f"/servers/{server_id}")
    if response.status_code == 404:
        return None
    os_exc.raise_from_response(response)
    return _server(response.json()["server"])


@_operation("set_expiry")
def set_expiry(provider: models.Provider, server_id: str, expires_at: str) -> None:
    """Update a server's `oms_expires_at` metadata (no other key is touched)."""
    connection(provider).compute.set_server_metadata(server_id, **{META_EXPIRES: expires_at})


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
    conn = connection(provider)
    network = _external_network(conn, provider)
    port, made = _port_and_left(conn, server_id, instance_id)
    if port is None:
        raise CloudError(BUILD_FAILED, f"server {server_id} has no port to attach a floating IP to")
    if made is None:
        made = conn.network.create_ip(
            floating_network_id=network.id, port_id=port.id, description=_floating_description(instance_id)
        )
    return FloatingIp(made.id, made.floating_ip_address, instance_id)


@_operation("floating_ip_find")
def left_floating_ip(provider: models.Provider, server_id: str, instance_id: str) -> FloatingIp | None:
    """The floating IP attached for the instance but never recorded (see `_port_and_left`), if any."""
    _, left = _port_and_left(connection(provider), server_id, instance_id)
    return None if left is None else FloatingIp(left.id, left.floating_ip_address, instance_id)


@_operation("floating_ip_list")
def our_floating_ips(provider: models.Provider) -> list[FloatingIp]:
    """This deployment's floating IPs on the provider (one list call)."""
    prefix = _floating_description("")
    found = list(connection(provider).network.ips())
    return [
        FloatingIp(ip.id, ip.floating_ip_address, (ip.description or "")[len(prefix) :] or None)
        for ip in found
        if (ip.description or "").startswith(prefix)
    ]


@_operation("floating_ip_release")
def release_floating_ip(provider: models.Provider, floating_ip_id: str) -> None:
    """Give a floating IP back; one that is already gone counts as released."""
    connection(provider).network.delete_ip(floating_ip_id, ignore_missing=True)


@_operation("networks")
def candidate_networks(provider: models.Provider) -> list[str]:
    """The networks Nova would choose among for a server that names none: the project's own and
    shared ones (an external network that is not shared is not a candidate)."""
    found = list(connection(provider).network.networks())
    return sorted(n.name or n.id for n in found if n.is_shared or not n.is_router_external)


@_operation("console_output")
def console_output(provider: models.Provider, server_id: str) -> str:
    """The server's console log (what cloud-init printed: its SSH host keys among it)."""
    answer = connection(provider).compute.get_server_console_output(server_id)
    return (answer or {}).get("output") or ""


@_operation("delete_server")
def delete_server(provider: models.Provider, server_id: str) -> None:
    """Delete a server; one that is already gone counts as deleted."""
    connection(provider).compute.delete_server(server_id, ignore_missing=True)


def classify_fault(fault: str | None) -> CloudError:
    """A server that went ERROR: no valid host is a capacity problem (RULES), anything else a
    failed build."""
    message = fault or "server went to ERROR"
    text = message.lower()
    capacity = any(r.error_class == CAPACITY and r.matches(None, None, text, {}) for r in RULES)
    return CloudError(CAPACITY if capacity else BUILD_FAILED, message)
