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

from sim.config import ProviderConfig, Settings, validate_settings

ERROR_BUILD_ABORTED = "Build of instance {id} aborted: Failed to allocate the network(s), not rescheduling."
ERROR_NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


@functools.lru_cache(maxsize=8192)  # server lists re-render the same timestamps constantly
def iso(ts: float, micro: bool = False) -> str:
    """Format a wall-clock timestamp the way OpenStack APIs do (UTC, trailing Z)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(ts, tz=UTC).strftime(fmt)


def domain_id(name: str) -> str:
    # Keystone's built-in domain is named "Default" but has the id "default".
    return "default" if name == "Default" else name.lower()


class QuotaExceeded(Exception):
    """Nova's OverQuota, carrying the numbers its message reports."""

    def __init__(self, requested: int, used: int, limit: int) -> None:
        self.requested, self.used, self.limit = requested, used, limit
        super().__init__(
            f"Quota exceeded for instances: Requested {requested}, but already used {used} of {limit} instances"
        )


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


class Provider:
    """One simulated OpenStack cloud (Keystone project + Nova + Glance + Neutron)."""

    def __init__(self, config: ProviderConfig, seed: int = 0) -> None:
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
        self.networks = [self._network(n, idx) for idx, n in enumerate(config.networks)]
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
        net = {"external": index == 0}
        net.update(raw)
        net.setdefault("id", self._uuid())
        net["index"] = index
        net["subnet_v4_id"] = self._uuid()
        net["subnet_v6_id"] = self._uuid()
        # The first network plays devstack's "public": 172.24.0.0/16 (a /16 so big runs fit).
        net["cidr_v4"] = "172.24.0.0/16" if index == 0 else f"10.{index % 256}.0.0/16"
        net["cidr_v6"] = f"2001:db8:{index:x}::/64"
        return net

    def find_image(self, image_id: str) -> dict[str, Any] | None:
        return next((i for i in self.images if i["id"] == image_id), None)

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

    # -- servers ------------------------------------------------------------
    def _allocate_addresses(self, network_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        addresses: dict[str, list[dict[str, Any]]] = {}
        for net_id in network_ids:
            net = self.find_network(net_id)
            if net is None:
                continue
            self._ip_counter += 1
            n = self._ip_counter
            v4 = ipaddress.ip_network(net["cidr_v4"])
            v6 = ipaddress.ip_network(net["cidr_v6"])
            mac = "fa:16:3e:" + ":".join(f"{self.rng.getrandbits(8):02x}" for _ in range(3))
            common = {"OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac}
            # Skip .0 and the .1 gateway; wrap instead of running out in very long runs.
            addresses[net["name"]] = [
                {"version": 4, "addr": str(v4[2 + n % (v4.num_addresses - 3)]), **common},
                {"version": 6, "addr": str(v6[n + 1]), **common},
            ]
        return addresses

    def create_servers(self, spec: ServerSpec, origin: str = "api") -> list[Server]:
        """Create up to max_count servers atomically, or raise QuotaExceeded and create none.

        Like Nova, a multi-create gets as many as the quota allows but at least min_count.
        """
        with self.lock:
            used = len(self.servers)
            limit = self.settings.quota_instances
            count = spec.max_count
            if limit >= 0 and used + count > limit:
                count = limit - used
                if count < spec.min_count:
                    self.quota_rejections += 1
                    raise QuotaExceeded(spec.min_count, used, limit)
            multi = spec.max_count > 1
            created = [self._create_one(spec, origin, i, multi) for i in range(count)]
            self.servers_peak = max(self.servers_peak, len(self.servers))
        return created

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
            created_at=now,
            updated_at=now,
            ready_at=time.monotonic() + self.settings.boot_seconds,
            outcome=outcome,
            fault_message=fault,
            addresses=self._allocate_addresses(spec.network_ids) if outcome == "ACTIVE" else {},
            origin=origin,
            admin_pass="".join(
                self.rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(12)
            ),
        )
        self.servers[server_id] = server
        self.servers_created += 1
        return server

    def list_servers(self) -> list[Server]:
        """Newest first, like Nova's default created_at desc sort."""
        with self.lock:
            return list(reversed(self.servers.values()))

    def get_server(self, server_id: str) -> Server | None:
        with self.lock:
            return self.servers.get(server_id)

    def delete_server(self, server_id: str) -> bool:
        with self.lock:
            if self.servers.pop(server_id, None) is None:
                return False
            self.servers_deleted += 1
            return True

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
                "networks": [{"id": n["id"], "name": n["name"]} for n in self.networks],
            }
