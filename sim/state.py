"""In-memory state of one simulated provider: identity, inventory, tokens, servers and counters.

All mutation goes through :class:`Provider` methods that hold the provider's lock, so quota
checks and counters stay exact however many HTTP threads hit the same provider at once.
The HTTP-facing modules (keystone, nova, glance, neutron) only translate wire formats.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sim import guest, topology
from sim.config import ProviderConfig, Settings, validate_settings
from sim.listeners import BANNER, RESET, SILENT, ListenerHub, mapped_v6

ERROR_BUILD_ABORTED = "Build of instance {id} aborted: Failed to allocate the network(s), not rescheduling."
ERROR_NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
DEFAULT_GROUP = "default"


@functools.lru_cache(maxsize=8192)  # server lists re-render the same timestamps constantly
def iso(ts: float, micro: bool = False) -> str:
    """Format a wall-clock timestamp the way OpenStack APIs do (UTC, trailing Z)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(ts, tz=UTC).strftime(fmt)


# Taken once, so that a monotonic moment always converts to the same wall-clock time.
_WALL_MINUS_MONOTONIC = time.time() - time.monotonic()


def _wall_iso(monotonic: float) -> str:
    """A monotonic moment as a wall-clock timestamp with microseconds (for the control API)."""
    return datetime.fromtimestamp(monotonic + _WALL_MINUS_MONOTONIC, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def domain_id(name: str) -> str:
    # Keystone's built-in domain is named "Default" but has the id "default".
    return "default" if name == "Default" else name.lower()


# What makes two security group rules the same rule (Neutron's 409 "already exists").
RULE_IDENTITY = (
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
)


class QuotaExceeded(Exception):
    """Nova's 403 for a create the project's quotas cannot take, in Nova's words."""


def over_quota(overs: list[str], requested: int, used: int, limit: int) -> QuotaExceeded:
    """Nova's TooManyInstances: every resource over (sorted, joined by commas), with the numbers of
    the first, e.g. "Quota exceeded for cores: Requested 2, but already used 20 of 20 cores"."""
    names = ",".join(overs)
    return QuotaExceeded(
        f"Quota exceeded for {names}: Requested {requested}, but already used {used} of {limit} {names}"
    )


# Nova's PortLimitExceeded: a port quota reached while Nova makes the server's ports (no word "quota").
PORTS_EXCEEDED = "Maximum number of ports exceeded"


class NeutronError(Exception):
    """A Neutron fault: status, the ``type`` Neutron names it with, and its message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        self.status, self.kind = status, kind
        super().__init__(message)


def port_id_for(server_id: str, network_id: str) -> str:
    # Derived, not drawn: the port of a server on a network is stable and costs no random draw.
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{server_id}/{network_id}"))


@dataclass
class Face:
    """One address of a server (or floating IP) that a client can connect to."""

    family: int  # 4 or 6: which security-group rules apply
    shown: str  # the address the API shows
    listen: str  # the loopback address the listener is bound to
    port: int
    error: str | None = None  # why no listener could be bound (privilege, descriptors)


@dataclass
class FloatingIP:
    id: str
    address: str
    network_id: str
    created_at: float
    description: str = ""
    port_id: str | None = None
    fixed_ip_address: str | None = None
    router_id: str | None = None
    visible_at: float = 0.0  # monotonic time from which the server's addresses show it
    tags: list[str] = field(default_factory=list)
    face: Face | None = None
    updated_at: float = 0.0


@dataclass
class Volume:
    id: str
    size: int
    image_id: str | None
    server_id: str | None
    delete_on_termination: bool


@dataclass
class Token:
    id: str
    issued_at: float
    expires_at: float
    methods: list[str]
    scoped: bool
    application_credential: bool = False


@dataclass
class Server:
    id: str
    name: str
    image_id: str | None
    flavor_id: str
    network_ids: list[str]
    metadata: dict[str, str]
    user_data: str | None
    key_name: str | None
    security_groups: list[str]
    created_at: float
    ready_at: float
    outcome: str
    fault_message: str | None
    addresses: dict[str, list[dict[str, Any]]]
    origin: str
    admin_pass: str
    updated_at: float = 0.0
    group_ids: list[str] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    volume_ids: list[str] = field(default_factory=list)
    config_drive: bool = False
    locked: bool = False  # Nova's lock: a delete answers 409 "Instance ... is locked"
    gone_at: float | None = None  # monotonic time a delete under way ends (task_state "deleting" till then)
    sshd_at: float = 0.0  # monotonic time from which sshd answers and the host keys are printed
    banner_at: float | None = None  # monotonic time a client was first given the banner
    _host_keys: list[str] | None = None

    @property
    def host_keys(self) -> list[str]:
        if self._host_keys is None:  # drawn lazily: most servers in a benchmark never need them
            self._host_keys = guest.host_keys(self.id, self.name)
        return self._host_keys

    def status(self, now: float | None = None) -> str:
        """BUILD until its boot time has passed, then its predetermined outcome."""
        now = time.monotonic() if now is None else now
        return "BUILD" if now < self.ready_at else self.outcome

    def snapshot(self) -> dict[str, Any]:
        """Raw view for the control API."""
        status = self.status()
        return {
            "id": self.id,
            "name": self.name,
            "status": status,
            "metadata": dict(self.metadata),
            "image_id": self.image_id,
            "flavor_id": self.flavor_id,
            "network_ids": list(self.network_ids),
            "key_name": self.key_name,
            "user_data": self.user_data,
            "origin": self.origin,
            "created": iso(self.created_at),
            "fault": self.fault_message if status == "ERROR" else None,
            "security_groups": list(self.security_groups),
            "volumes": list(self.volume_ids),
            "config_drive": self.config_drive,
            # Where a client reaches the server: the address shown, and the loopback address and
            # port the listener is bound to (the same, or its IPv4 form for an IPv6 face).
            "reach": [
                {"family": f.family, "address": f.shown, "listen": f.listen, "port": f.port, "error": f.error}
                for f in self.faces
            ],
            "host_keys": list(self.host_keys) if self.outcome == "ACTIVE" else [],
            # When Nova says ACTIVE, when sshd came (or comes) up, and when a client first read its
            # banner: a client that says "reachable" before the last is wrong (tests/test_layouts.py).
            "active_at": _wall_iso(self.ready_at) if self.outcome == "ACTIVE" else None,
            "sshd_up_at": _wall_iso(self.sshd_at) if self.outcome == "ACTIVE" else None,
            "first_banner_at": None if self.banner_at is None else _wall_iso(self.banner_at),
            "locked": self.locked,
            "task_state": "deleting" if self.gone_at is not None else None,
        }


@dataclass
class ServerSpec:
    """A validated create request, independent of the wire format it came from."""

    name: str
    image_id: str | None
    flavor_id: str
    network_ids: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    user_data: str | None = None
    key_name: str | None = None
    security_groups: list[str] = field(default_factory=lambda: ["default"])
    min_count: int = 1
    max_count: int = 1
    group_ids: list[str] = field(default_factory=list)  # resolved from security_groups by the API
    # Boot from volume: {"size": GiB, "image_id": ..., "delete_on_termination": bool}.
    boot_volume: dict[str, Any] | None = None
    config_drive: bool = False


class Provider:
    """One simulated OpenStack cloud (Keystone project + Nova + Glance + Neutron)."""

    def __init__(self, config: ProviderConfig, seed: int = 0, listeners: ListenerHub | None = None) -> None:
        self.config = config
        self.name = config.name
        self.lock = threading.Lock()
        # Seeded per provider so every id and every error_rate decision is reproducible.
        self.rng = random.Random(f"{seed}:{config.name}")
        # Tokens draw from their own stream: how often a client re-authenticates must not
        # shift server ids or error_rate outcomes.
        self._token_rng = random.Random(f"{seed}:{config.name}:tokens")
        self.settings = Settings(**config.settings.as_dict())
        self.user_id = self._uuid_hex()
        self.project_id = self._uuid_hex()
        self.user_domain_id = domain_id(config.user_domain_name)
        self.project_domain_id = domain_id(config.project_domain_name)
        self.images = [self._image(i) for i in config.images]
        self.flavors = [self._flavor(f) for f in config.flavors]
        self.networks = [
            self._network(n, idx)
            for idx, n in enumerate(topology.merge_networks(config.network_layout, config.networks))
        ]
        # Neutron resources draw ids from their own stream, so creating a floating IP or a
        # security group does not shift the server ids a seeded scenario expects.
        self._net_rng = random.Random(f"{seed}:{config.name}:network")
        self.listeners = listeners or ListenerHub()
        self.router_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self.project_id}/router"))
        self.security_groups: dict[str, dict[str, Any]] = {}
        self._add_group(DEFAULT_GROUP, "Default security group", default=True)
        self.floating_ips: dict[str, FloatingIP] = {}
        self.floating_ips_created = 0
        self.floating_ips_deleted = 0
        self.floating_ips_peak = 0
        self.floating_ip_quota_rejections = 0
        self.volumes: dict[str, Volume] = {}
        self.volumes_created = 0
        self.volumes_deleted = 0
        self.volumes_peak = 0
        self.ports: dict[str, tuple[str, str]] = {}  # port id -> (server id, network id)
        self.tokens: dict[str, Token] = {}
        self.servers: dict[str, Server] = {}
        self._ip_counter = 0
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.servers_created = 0
        self.servers_deleted = 0
        self.servers_peak = 0
        self.quota_rejections = 0
        self.tokens_issued = 0
        # The rate limit's bucket (settings.rate_limit_*) and the requests it refused.
        self._rate_tokens = 0.0
        self._rate_at: float | None = None
        self.rate_limited = 0

    # -- ids and inventory -------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _uuid_hex(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def _image(self, raw: dict[str, Any]) -> dict[str, Any]:
        image = {"min_disk": 0, "min_ram": 0, "size": 1073741824, "disk_format": "qcow2", "status": "active"}
        image.update(raw)
        image.setdefault("id", self._uuid())
        return image

    def _flavor(self, raw: dict[str, Any]) -> dict[str, Any]:
        flavor = {"vcpus": 1, "ram": 1024, "disk": 10, "ephemeral": 0, "swap": 0}
        flavor.update(raw)
        flavor.setdefault("id", self._uuid())
        flavor["id"] = str(flavor["id"])
        return flavor

    def _network(self, raw: dict[str, Any], index: int) -> dict[str, Any]:
        net = dict(raw)
        net.setdefault("id", self._uuid())
        net["index"] = index
        net["subnet_v4_id"] = self._uuid()
        net["subnet_v6_id"] = self._uuid()
        if net["reachable"]:
            # Addresses on a reachable network are loopback addresses with a listener behind them.
            net["cidr_v4"], net["cidr_v6"] = "127.0.0.0/8", "::ffff:127.0.0.0/104"
        else:
            net["cidr_v4"], net["cidr_v6"] = f"10.{index % 256}.0.0/16", f"2001:db8:{index:x}::/64"
        return net

    def find_image(self, image_id: str) -> dict[str, Any] | None:
        return next((i for i in self.images if i["id"] == image_id), None)

    # Images rotate under clients (REAL-CLOUDS.md): a new one takes the name, the old one is
    # renamed with a date, hidden (Glance's `os_hidden`: unlisted, still bootable) or deleted.
    def add_image(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A new image; `created_at` defaults to now, other keys are its properties."""
        with self.lock:
            image = self._image({"created_at": iso(time.time()), **raw})
            if self.find_image(image["id"]) is not None:
                raise ValueError(f"image {image['id']} exists")
            self.images.append(image)
            return dict(image)

    def _image_by_ref(self, ref: str) -> dict[str, Any]:
        found = [i for i in self.images if ref in (i["id"], i["name"])]
        if len(found) != 1:
            raise ValueError(f"{len(found) or 'no'} images named or numbered {ref!r}: use an id")
        return found[0]

    def update_image(self, ref: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Rename, hide or change the properties of one image (by id, or a name only it has);
        a property set to null is removed."""
        with self.lock:
            image = self._image_by_ref(ref)
            for key, value in changes.items():
                if value is None:
                    image.pop(key, None)
                else:
                    image[key] = value
            return dict(image)

    def delete_image(self, ref: str) -> None:
        """Delete an image: Nova then refuses to boot it (400 "Image <id> could not be found.")."""
        with self.lock:
            self.images.remove(self._image_by_ref(ref))

    def find_flavor(self, flavor_id: str) -> dict[str, Any] | None:
        return next((f for f in self.flavors if f["id"] == flavor_id), None)

    def find_network(self, network_id: str) -> dict[str, Any] | None:
        return next((n for n in self.networks if n["id"] == network_id), None)

    # -- settings and counters ---------------------------------------------
    def update_settings(self, changes: dict[str, Any]) -> None:
        """Apply a PATCH; raises sim.config.ConfigError on bad input before changing anything."""
        valid = validate_settings(changes)
        with self.lock:
            for key, value in valid.items():
                setattr(self.settings, key, value)

    def record_call(self, kind: str, status: int | None = None) -> None:
        """Count one API call; status is None when it was never answered (hang mode)."""
        with self.lock:
            self.calls[kind] += 1
            if status is not None and status >= 400:
                self.errors[str(status)] += 1

    def over_rate(self) -> bool:
        """Take one request's token from the account's bucket; True (counted) when it has none."""
        rate = self.settings.rate_limit_per_second
        if rate is None:
            return False
        burst = float(self.settings.rate_limit_burst or max(1.0, rate))
        now = time.monotonic()
        with self.lock:
            since = burst if self._rate_at is None else (now - self._rate_at) * rate
            self._rate_tokens, self._rate_at = min(burst, self._rate_tokens + since), now
            if self._rate_tokens >= 1:
                self._rate_tokens -= 1
                return False
            self.rate_limited += 1
            return True

    # -- tokens -------------------------------------------------------------
    def issue_token(self, methods: list[str], scoped: bool, application_credential: bool = False) -> Token:
        now = time.time()
        with self.lock:
            token = Token(
                id="gAAAAAB" + f"{self._token_rng.getrandbits(256):064x}",
                issued_at=now,
                expires_at=now + self.config.token_ttl_seconds,
                methods=methods,
                scoped=scoped,
                application_credential=application_credential,
            )
            self.tokens_issued += 1
            if self.tokens_issued % 1000 == 0:
                # Lazy purge: keeps memory flat in long benchmarks without a janitor thread.
                self.tokens = {k: t for k, t in self.tokens.items() if t.expires_at > now}
            self.tokens[token.id] = token
        return token

    def check_token(self, token_id: str | None) -> Token | None:
        """The token if it is known, unexpired, and the provider is not refusing auth."""
        if not token_id:
            return None
        with self.lock:
            if self.settings.mode == "auth_fail":
                return None
            token = self.tokens.get(token_id)
        if token is None or token.expires_at <= time.time():
            return None
        return token

    def revoke_token(self, token_id: str) -> bool:
        with self.lock:
            return self.tokens.pop(token_id, None) is not None

    def revoke_tokens(self) -> int:
        """Forget every token issued so far, the credentials staying valid: what a client holding
        one meets when it expires mid-work (ConoHa's last 24 h). Returns how many were revoked."""
        with self.lock:
            revoked = len(self.tokens)
            self.tokens.clear()
            return revoked

    # -- servers ------------------------------------------------------------
    def _open_face(self, family: int, server_id: str | None, fip_id: str | None, address: str | None = None) -> Face:
        port = self.settings.ssh_port

        def verdict(peer: str) -> str:
            return self.reach_verdict(family, port, peer, server_id=server_id, fip_id=fip_id)

        listen, problem = self.listeners.open(port, verdict, address)
        return Face(family, listen if family == 4 else mapped_v6(listen), listen, port, problem)

    def _allocate_addresses(self, server_id: str, network_ids: list[str]) -> tuple[dict[str, list[dict]], list[Face]]:
        addresses: dict[str, list[dict[str, Any]]] = {}
        faces: list[Face] = []
        for net_id in network_ids:
            net = self.find_network(net_id)
            if net is None:
                continue
            self._ip_counter += 1
            n = self._ip_counter
            mac = "fa:16:3e:" + ":".join(f"{self.rng.getrandbits(8):02x}" for _ in range(3))
            common = {"OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac}
            entries = []
            for version in (4, 6):
                if not net[f"v{version}"]:
                    continue
                if net["reachable"]:
                    face = self._open_face(version, server_id, None)
                    faces.append(face)
                    addr = face.shown
                else:
                    cidr = ipaddress.ip_network(net[f"cidr_v{version}"])
                    # Skip .0 and the .1 gateway; wrap instead of running out in very long runs.
                    addr = str(cidr[2 + n % (cidr.num_addresses - 3)]) if version == 4 else str(cidr[n + 1])
                entries.append({"version": version, "addr": addr, **common})
            addresses[net["name"]] = entries
            self.ports[port_id_for(server_id, net_id)] = (server_id, net_id)
        return addresses, faces

    def create_servers(self, spec: ServerSpec, origin: str = "api") -> list[Server]:
        """Create up to max_count servers atomically, or raise QuotaExceeded and create none.

        Like Nova, a multi-create gets as many as the quota allows but at least min_count.
        """
        self._finish_deletes()
        with self.lock:
            count = self._quota_allows(spec)  # servers being deleted still count, as in Nova
            multi = spec.max_count > 1
            created = [self._create_one(spec, origin, i, multi) for i in range(count)]
            self.servers_peak = max(self.servers_peak, len(self.servers))
            self.volumes_peak = max(self.volumes_peak, len(self.volumes))
        return created

    def _quota_allows(self, spec: ServerSpec) -> int:
        """How many of the servers asked for the quotas take (at most max_count), or raise Nova's
        error when that is fewer than min_count. Ports first, as Nova makes them before it counts
        instances, cores and RAM; every server counts, ERROR ones included. Holds the lock."""
        ports = self.settings.quota_ports
        if 0 <= ports < len(self.ports) + spec.min_count * len(spec.network_ids):
            self.quota_rejections += 1
            raise QuotaExceeded(PORTS_EXCEEDED)
        flavor = self.find_flavor(spec.flavor_id) or {}
        used = self._usage()
        quotas = {  # resource: (limit, used, each new server's share)
            "cores": (self.settings.quota_cores, used["cores"], flavor.get("vcpus", 0)),
            "instances": (self.settings.quota_instances, used["instances"], 1),
            "ram": (self.settings.quota_ram_mb, used["ram"], flavor.get("ram", 0)),
        }
        count = spec.max_count
        for limit, used, each in quotas.values():
            if limit >= 0 and each > 0:
                count = min(count, max(0, (limit - used) // each))
        if count >= spec.min_count:
            return count
        overs = [name for name, (limit, used, each) in quotas.items() if 0 <= limit < used + spec.min_count * each]
        limit, used, each = quotas[overs[0]]
        self.quota_rejections += 1
        raise over_quota(overs, spec.min_count * each, used, limit)

    def usage(self) -> dict[str, int]:
        """What the project's servers hold, as Nova's quotas count it: instances, cores, RAM (MiB)."""
        with self.lock:
            return self._usage()

    def _usage(self) -> dict[str, int]:
        flavors = [self.find_flavor(s.flavor_id) or {} for s in self.servers.values()]
        return {
            "instances": len(flavors),
            "cores": sum(f.get("vcpus", 0) for f in flavors),
            "ram": sum(f.get("ram", 0) for f in flavors),
        }

    def _create_one(self, spec: ServerSpec, origin: str, index: int, multi: bool) -> Server:
        server_id = self._uuid()
        # Draw both numbers every time so one rate's setting doesn't shift the other's sequence.
        error_draw, no_host_draw = self.rng.random(), self.rng.random()
        outcome, fault = "ACTIVE", None
        if error_draw < self.settings.error_rate:
            outcome, fault = "ERROR", ERROR_BUILD_ABORTED.format(id=server_id)
        elif no_host_draw < self.settings.no_valid_host_rate:
            outcome, fault = "ERROR", ERROR_NO_VALID_HOST
        now = time.time()
        name = f"{spec.name}-{index + 1}" if multi else spec.name
        addresses, faces = self._allocate_addresses(server_id, spec.network_ids) if outcome == "ACTIVE" else ({}, [])
        ready_at = time.monotonic() + self.settings.boot_seconds
        server = Server(
            id=server_id,
            name=name,
            image_id=spec.image_id,
            flavor_id=spec.flavor_id,
            network_ids=list(spec.network_ids),
            metadata=dict(spec.metadata),
            user_data=spec.user_data,
            key_name=spec.key_name,
            security_groups=list(spec.security_groups),
            config_drive=spec.config_drive,
            created_at=now,
            updated_at=now,
            ready_at=ready_at,
            sshd_at=ready_at + self.settings.ready_seconds,
            outcome=outcome,
            fault_message=fault,
            addresses=addresses,
            faces=faces,
            group_ids=list(spec.group_ids) or [self.default_group_id],
            origin=origin,
            admin_pass="".join(
                self.rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(12)
            ),
        )
        if spec.boot_volume is not None:
            volume = Volume(
                id=self._net_uuid(),
                size=spec.boot_volume["size"],
                image_id=spec.boot_volume.get("image_id"),
                server_id=server_id,
                delete_on_termination=spec.boot_volume["delete_on_termination"],
            )
            self.volumes[volume.id] = volume
            self.volumes_created += 1
            server.volume_ids.append(volume.id)
        self.servers[server_id] = server
        self.servers_created += 1
        return server

    def list_servers(self) -> list[Server]:
        """Newest first, like Nova's default created_at desc sort."""
        self._finish_deletes()
        with self.lock:
            return list(reversed(self.servers.values()))

    def get_server(self, server_id: str) -> Server | None:
        self._finish_deletes()
        with self.lock:
            return self.servers.get(server_id)

    def lock_server(self, server_id: str, locked: bool) -> Server | None:
        with self.lock:
            server = self.servers.get(server_id)
            if server is not None:
                server.locked = locked
            return server

    def delete_server(self, server_id: str, *, forced: bool = False) -> bool | str:
        """Delete a server with its ports; its floating IPs stay allocated (a leak if nobody frees
        them). "locked" for a locked server (unless `forced`: the control API's). With
        `delete_seconds`, the server stays (task_state "deleting", counted on quota) that long."""
        with self.lock:
            server = self.servers.get(server_id)
            if server is None:
                return False
            if server.locked and not forced:
                return "locked"
            if self.settings.delete_seconds and not forced:
                if server.gone_at is None:
                    server.gone_at = time.monotonic() + self.settings.delete_seconds
                return True
        self._close(self._forget_server(server_id))
        return True

    def _finish_deletes(self) -> None:
        """End the deletes whose time has come (computed on read: no timers run)."""
        now = time.monotonic()
        with self.lock:
            due = [s.id for s in self.servers.values() if s.gone_at is not None and s.gone_at <= now]
        for server_id in due:
            self._close(self._forget_server(server_id))

    def _close(self, server: Server | None) -> None:
        if server is not None:
            # Outside the lock: the listener loop may be waiting for it to judge a connection.
            self.listeners.close([f.listen for f in server.faces])

    def _forget_server(self, server_id: str) -> Server | None:
        with self.lock:
            server = self.servers.pop(server_id, None)
            if server is None:
                return None
            self.servers_deleted += 1
            gone_ports = {p for p, (sid, _) in self.ports.items() if sid == server_id}
            for port in gone_ports:
                del self.ports[port]
            for fip in self.floating_ips.values():
                if fip.port_id in gone_ports:
                    # Neutron disassociates a floating IP whose port is deleted; it is not freed.
                    fip.port_id = fip.fixed_ip_address = fip.router_id = None
                    fip.updated_at = time.time()
            for volume_id in server.volume_ids:
                volume = self.volumes.get(volume_id)
                if volume is None:
                    continue
                if volume.delete_on_termination:
                    del self.volumes[volume_id]
                    self.volumes_deleted += 1
                else:
                    volume.server_id = None  # detached and left "available": someone must delete it
            return server

    def addresses_of(self, server: Server) -> dict[str, list[dict[str, Any]]]:
        """The server's addresses as Nova shows them: fixed ones, plus floating IPs once visible."""
        if server.status() != "ACTIVE":
            return {}
        now = time.monotonic()
        with self.lock:
            floating = [
                f for f in self.floating_ips.values() if f.port_id and f.visible_at <= now and f.port_id in self.ports
            ]
            if not floating:
                return server.addresses
            out = {name: list(entries) for name, entries in server.addresses.items()}
            for fip in floating:
                owner, net_id = self.ports[fip.port_id]  # type: ignore[index]
                net = self.find_network(net_id)
                if owner != server.id or net is None or net["name"] not in out:
                    continue
                mac = out[net["name"]][0]["OS-EXT-IPS-MAC:mac_addr"] if out[net["name"]] else ""
                out[net["name"]].append(
                    {"version": 4, "addr": fip.address, "OS-EXT-IPS:type": "floating", "OS-EXT-IPS-MAC:mac_addr": mac}
                )
            return out

    # -- reachability ----------------------------------------------------------
    def reach_verdict(self, family: int, port: int, peer: str, *, server_id: str | None, fip_id: str | None) -> str:
        """What a client connecting to a face meets (sim.listeners: BANNER, RESET or SILENT)."""
        now = time.monotonic()
        with self.lock:
            if fip_id is not None:
                fip = self.floating_ips.get(fip_id)
                if fip is None or fip.port_id is None or fip.visible_at > now or fip.port_id not in self.ports:
                    return SILENT  # a floating IP that leads nowhere (yet): packets are dropped
                server_id = self.ports[fip.port_id][0]
            server = self.servers.get(server_id or "")
            if server is None or server.status(now) != "ACTIVE":
                return SILENT
            if not self._admits(server, family, port, peer):
                return SILENT
            if now < server.sshd_at:
                return RESET
            if server.banner_at is None:
                server.banner_at = now
            return BANNER

    def _admits(self, server: Server, family: int, port: int, peer: str) -> bool:
        if self.settings.security_groups_open:
            return True
        for group_id in server.group_ids:
            group = self.security_groups.get(group_id)
            if group and any(topology.rule_admits(r, family, port, peer) for r in group["rules"]):
                return True
        return False

    def console_output(self, server_id: str) -> str | None:
        """The server's console log; None if it is unknown."""
        with self.lock:
            server = self.servers.get(server_id)
        if server is None:
            return None
        return guest.console_log(server.name, server.host_keys, server.created_at, time.monotonic() >= server.sshd_at)

    # -- security groups -----------------------------------------------------------
    @property
    def default_group_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self.project_id}/default"))

    def _net_uuid(self) -> str:
        return str(uuid.UUID(int=self._net_rng.getrandbits(128), version=4))

    def _rule(self, group_id: str, **attrs: Any) -> dict[str, Any]:
        rule = {
            "id": self._net_uuid(),
            "security_group_id": group_id,
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": None,
            "port_range_min": None,
            "port_range_max": None,
            "remote_ip_prefix": None,
            "remote_group_id": None,
            "remote_address_group_id": None,
            "description": "",
        }
        rule.update(attrs)
        return rule

    def _add_group(self, name: str, description: str, default: bool = False) -> dict[str, Any]:
        group_id = self.default_group_id if default else self._net_uuid()
        # Neutron gives every group egress-anything rules; the default group also admits its own
        # members, which is no help to a client outside the cloud.
        rules = [self._rule(group_id, direction="egress", ethertype=e) for e in ("IPv4", "IPv6")]
        if default:
            rules += [self._rule(group_id, ethertype=e, remote_group_id=group_id) for e in ("IPv4", "IPv6")]
        group = {"id": group_id, "name": name, "description": description, "rules": rules, "created_at": time.time()}
        self.security_groups[group_id] = group
        return group

    def create_security_group(self, name: str, description: str) -> dict[str, Any]:
        with self.lock:
            return self._add_group(name, description)

    def delete_security_group(self, group_id: str) -> None:
        with self.lock:
            if group_id not in self.security_groups:
                raise NeutronError(404, "SecurityGroupNotFound", f"Security group {group_id} does not exist")
            if group_id == self.default_group_id:
                raise NeutronError(
                    409, "SecurityGroupCannotRemoveDefault", "Insufficient rights for removing default security group."
                )
            if any(group_id in s.group_ids for s in self.servers.values()):
                raise NeutronError(409, "SecurityGroupInUse", f"Security Group {group_id} in use.")
            del self.security_groups[group_id]

    def resolve_groups(self, refs: list[str]) -> list[str] | tuple[int, str]:
        """Nova's lookup of ``security_groups`` names (or ids): the ids, or (status, message)."""
        with self.lock:
            ids = []
            for ref in refs:
                if ref in self.security_groups:
                    ids.append(ref)
                    continue
                found = [g["id"] for g in self.security_groups.values() if g["name"] == ref]
                if not found:
                    return 400, f"Security group {ref} not found for project {self.project_id}."
                if len(found) > 1:
                    return 409, f"Multiple security groups found matching '{ref}'. Use an ID to be more specific."
                ids.append(found[0])
            return ids

    def add_rule(self, group_id: str, attrs: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            group = self.security_groups.get(group_id)
            if group is None:
                raise NeutronError(404, "SecurityGroupNotFound", f"Security group {group_id} does not exist")
            rule = self._rule(group_id, **attrs)
            keys = RULE_IDENTITY
            for existing in group["rules"]:
                if all(existing.get(k) == rule.get(k) for k in keys):
                    raise NeutronError(
                        409,
                        "SecurityGroupRuleExists",
                        f"Security group rule already exists. Rule id is {existing['id']}.",
                    )
            group["rules"].append(rule)
            return rule

    def delete_rule(self, rule_id: str) -> None:
        with self.lock:
            for group in self.security_groups.values():
                for rule in group["rules"]:
                    if rule["id"] == rule_id:
                        group["rules"].remove(rule)
                        return
        raise NeutronError(404, "SecurityGroupRuleNotFound", f"Security group rule {rule_id} does not exist")

    # -- floating IPs ------------------------------------------------------------
    def create_floating_ip(self, network_id: str, port_id: str | None, description: str) -> FloatingIP:
        with self.lock:
            net = self.find_network(network_id)
            if net is None:
                raise NeutronError(404, "NetworkNotFound", f"Network {network_id} could not be found.")
            if not net["external"]:
                raise NeutronError(
                    400, "BadRequest", f"Bad floatingip request: Network {network_id} is not a valid external network."
                )
            quota = self.settings.floating_ip_quota
            if 0 <= quota <= len(self.floating_ips):
                self.floating_ip_quota_rejections += 1
                raise NeutronError(409, "OverQuota", "Quota exceeded for resources: ['floatingip'].")
            if port_id is not None:
                self._check_associable(network_id, port_id)
            fip_id = self._net_uuid()
            face = self._open_face(4, None, fip_id)
            fip = FloatingIP(fip_id, face.shown, network_id, time.time(), description, face=face)
            fip.updated_at = fip.created_at
            if port_id is not None:
                self._associate(fip, port_id)
            self.floating_ips[fip.id] = fip
            self.floating_ips_created += 1
            self.floating_ips_peak = max(self.floating_ips_peak, len(self.floating_ips))
            return fip

    def _check_associable(self, network_id: str, port_id: str) -> None:
        if port_id not in self.ports:
            raise NeutronError(404, "PortNotFound", f"Port {port_id} could not be found.")
        port_net = self.find_network(self.ports[port_id][1])
        assert port_net is not None
        if not self.settings.floating_ip_router or port_net["external"]:
            raise NeutronError(
                404,
                "ExternalGatewayForFloatingIPNotFound",
                f"External network {network_id} is not reachable from subnet {port_net['subnet_v4_id']}.  "
                f"Therefore, cannot associate Port {port_id} with a Floating IP.",
            )

    def _associate(self, fip: FloatingIP, port_id: str | None) -> None:
        if port_id is None:
            fip.port_id = fip.fixed_ip_address = fip.router_id = None
        else:
            server_id, net_id = self.ports[port_id]
            net = self.find_network(net_id)
            server = self.servers.get(server_id)
            fixed = ""
            if server is not None and net is not None:
                fixed = next((a["addr"] for a in server.addresses.get(net["name"], []) if a["version"] == 4), "")
            fip.port_id, fip.fixed_ip_address, fip.router_id = port_id, fixed, self.router_id
            fip.visible_at = time.monotonic() + self.settings.floating_ip_delay_seconds
        fip.updated_at = time.time()

    def update_floating_ip(self, fip_id: str, changes: dict[str, Any]) -> FloatingIP:
        with self.lock:
            fip = self.floating_ips.get(fip_id)
            if fip is None:
                raise NeutronError(404, "FloatingIPNotFound", f"Floating IP {fip_id} could not be found")
            if "port_id" in changes:
                port_id = changes["port_id"]
                if port_id is not None:
                    self._check_associable(fip.network_id, port_id)
                    holder = next(
                        (f for f in self.floating_ips.values() if f.port_id == port_id and f.id != fip.id), None
                    )
                    if holder is not None:
                        raise NeutronError(
                            409,
                            "FloatingIPPortAlreadyAssociated",
                            f"Cannot associate floating IP {fip.address} ({fip.id}) with port {port_id} using fixed "
                            f"IP {holder.fixed_ip_address}, as that fixed IP already has a floating IP on external "
                            f"network {holder.network_id}.",
                        )
                if port_id != fip.port_id:
                    self._associate(fip, port_id)
            if "description" in changes:
                fip.description = changes["description"]
                fip.updated_at = time.time()
            return fip

    def delete_floating_ip(self, fip_id: str) -> None:
        with self.lock:
            fip = self.floating_ips.pop(fip_id, None)
            if fip is None:
                raise NeutronError(404, "FloatingIPNotFound", f"Floating IP {fip_id} could not be found")
            self.floating_ips_deleted += 1
        if fip.face is not None:
            self.listeners.close([fip.face.listen])

    def set_tags(
        self, fip_id: str, tags: list[str] | None, add: str | None = None, remove: str | None = None
    ) -> list[str]:
        with self.lock:
            fip = self.floating_ips.get(fip_id)
            if fip is None:
                raise NeutronError(404, "FloatingIPNotFound", f"Floating IP {fip_id} could not be found")
            if tags is not None:
                fip.tags = list(dict.fromkeys(tags))
            if add is not None and add not in fip.tags:
                fip.tags.append(add)
            if remove is not None:
                if remove not in fip.tags:
                    raise NeutronError(404, "TagNotFound", f"Tag {remove} could not be found for floatingip {fip_id}.")
                fip.tags.remove(remove)
            return list(fip.tags)

    def update_metadata(self, server_id: str, metadata: dict[str, str], replace: bool) -> dict[str, str] | None:
        with self.lock:
            server = self.servers.get(server_id)
            if server is None:
                return None
            server.metadata = dict(metadata) if replace else {**server.metadata, **metadata}
            server.updated_at = time.time()
            return dict(server.metadata)

    def delete_metadata_key(self, server_id: str, key: str) -> bool | None:
        """None if the server is unknown, False if the key is, True once removed."""
        with self.lock:
            server = self.servers.get(server_id)
            if server is None:
                return None
            return server.metadata.pop(key, None) is not None

    def snapshot(self) -> dict[str, Any]:
        """Settings and counters for GET /_sim/providers/<name>."""
        self._finish_deletes()
        now = time.monotonic()
        with self.lock:
            statuses = Counter(s.status(now) for s in self.servers.values())
            return {
                "name": self.name,
                "region": self.config.region,
                **self.settings.as_dict(),
                "servers_live": len(self.servers),
                "servers_peak": self.servers_peak,
                "servers_created": self.servers_created,
                "servers_deleted": self.servers_deleted,
                "servers_by_status": dict(statuses),
                "quota_rejections": self.quota_rejections,
                "rate_limited": self.rate_limited,
                "network_layout": self.config.network_layout,
                "floating_ips_live": len(self.floating_ips),
                "floating_ips_peak": self.floating_ips_peak,
                "floating_ips_created": self.floating_ips_created,
                "floating_ips_deleted": self.floating_ips_deleted,
                "floating_ips_attached": sum(1 for f in self.floating_ips.values() if f.port_id),
                "floating_ip_quota_rejections": self.floating_ip_quota_rejections,
                "volumes_live": len(self.volumes),
                "volumes_peak": self.volumes_peak,
                "volumes_created": self.volumes_created,
                "volumes_deleted": self.volumes_deleted,
                "listeners_live": sum(len(s.faces) for s in self.servers.values())
                + sum(1 for f in self.floating_ips.values() if f.face),
                "tokens_issued": self.tokens_issued,
                "calls": dict(self.calls),
                "errors": dict(self.errors),
                "credentials": {
                    "username": self.config.username,
                    "password": self.config.password,
                    "project_name": self.config.project_name,
                    "project_id": self.project_id,
                    "user_domain_name": self.config.user_domain_name,
                    "project_domain_name": self.config.project_domain_name,
                    "application_credential_id": self.config.application_credential_id,
                    "application_credential_secret": self.config.application_credential_secret,
                },
                "images": [{"id": i["id"], "name": i["name"]} for i in self.images],
                "flavors": [{"id": f["id"], "name": f["name"]} for f in self.flavors],
                "networks": [
                    {"id": n["id"], "name": n["name"], "external": n["external"], "reachable": n["reachable"]}
                    for n in self.networks
                ],
            }

    def floating_ip_snapshots(self) -> list[dict[str, Any]]:
        """Raw floating IPs for the control API, with the server each one leads to."""
        now = time.monotonic()
        with self.lock:
            return [
                {
                    "id": f.id,
                    "address": f.address,
                    "network_id": f.network_id,
                    "port_id": f.port_id,
                    "server_id": self.ports[f.port_id][0] if f.port_id in self.ports else None,
                    "fixed_ip_address": f.fixed_ip_address,
                    "visible": bool(f.port_id) and f.visible_at <= now,
                    "description": f.description,
                    "tags": list(f.tags),
                    "listen_error": f.face.error if f.face else None,
                }
                for f in self.floating_ips.values()
            ]
