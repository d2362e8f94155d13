"""Helpers for tests and benchmarks: run the simulator in-process and drive its control API.

with start_simulator(providers=2, quota=5) as sim:
    conn = openstack.connect(**sim.connect_kwargs("p1"))
    sim.control("p1", mode="maintenance")
    assert sim.state("p1")["calls"]["token"] == 1
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from sim.config import SimConfig, config_from_data, default_config, load_config
from sim.server import SimServer


class SimControlError(RuntimeError):
    """The control API refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{status}: {message}")


class Simulator:
    """A running simulator plus a small client for its control API."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.base_url = server.base_url

    @property
    def providers(self) -> list[str]:
        return list(self.server.providers)

    def auth_url(self, provider: str, version: str = "v3") -> str:
        """Keystone URL for ``provider``; version is "v3", "v2.0" or "" (unversioned)."""
        return self.server.auth_url(provider, version).rstrip("/")

    def connect_kwargs(self, provider: str, version: str = "v3", **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``openstack.connect`` that ignore clouds.yaml and OS_* env vars."""
        cfg = self.server.providers[provider].config
        return connect_kwargs(self.auth_url(provider, version), vars(cfg), cfg.region, v3=version == "v3", **overrides)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call the control API (path relative to ``/_sim/``) and return the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + "_sim/" + path.lstrip("/"),
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                message = json.loads(payload).get("error", payload.decode())
            except ValueError:
                message = payload.decode(errors="replace")
            raise SimControlError(exc.code, message) from None

    def control(self, provider: str, **settings: Any) -> dict[str, Any]:
        """PATCH settings (mode, quota_instances, boot_seconds, ...); returns the new state."""
        return self.request("PATCH", f"providers/{provider}", settings)

    def lock(self, provider: str, server_id: str, locked: bool = True) -> dict[str, Any]:
        """Lock (or unlock) a server: Nova then answers its deletes 409 "Instance ... is locked"."""
        return self.request("PATCH", f"providers/{provider}/servers/{server_id}", {"locked": locked})

    def revoke_tokens(self, provider: str) -> int:
        """Every token the provider issued so far stops working; returns how many there were."""
        return self.request("POST", f"providers/{provider}/revoke-tokens", {})["revoked"]

    def state(self, provider: str) -> dict[str, Any]:
        """Settings and counters (servers_live, servers_peak, calls, ...)."""
        return self.request("GET", f"providers/{provider}")

    def servers(self, provider: str) -> list[dict[str, Any]]:
        """Raw servers with metadata, as the provider holds them."""
        return self.request("GET", f"providers/{provider}/servers")["servers"]

    def raw_server(self, provider: str, server_id: str) -> dict[str, Any]:
        """One raw server (see ``servers``), including ``reach`` and ``host_keys``."""
        for server in self.servers(provider):
            if server["id"] == server_id:
                return server
        raise SimControlError(404, f"unknown server {server_id!r}")

    def host_keys(self, provider: str, server_id: str) -> list[str]:
        """The server's public host keys (``ecdsa-sha2-nistp256 AAAA... root@name``, ``ssh-ed25519 ...``)."""
        return self.request("GET", f"providers/{provider}/servers/{server_id}/host-keys")["host_keys"]

    def floating_ips(self, provider: str) -> list[dict[str, Any]]:
        """Raw floating IPs: address, port_id, server_id, visible (shown in the server's addresses), tags."""
        return self.request("GET", f"providers/{provider}/floating-ips")["floating_ips"]

    def listening(self) -> set[str]:
        """Loopback addresses with a live listener, across all providers (for leak checks)."""
        return self.server.listeners.addresses()

    def add_servers(self, provider: str, **spec: Any) -> list[dict[str, Any]]:
        """Create servers that our app did not make (name, metadata, count, image, flavor)."""
        return self.request("POST", f"providers/{provider}/servers", spec)["servers"]

    def images(self, provider: str) -> list[dict[str, Any]]:
        """Every image (hidden ones too) with its properties and created_at."""
        return self.request("GET", f"providers/{provider}/images")["images"]

    def add_image(self, provider: str, **image: Any) -> dict[str, Any]:
        """A new image (name, created_at, os_hidden, properties such as os_distro)."""
        return self.request("POST", f"providers/{provider}/images", image)

    def update_image(self, provider: str, ref: str, **changes: Any) -> dict[str, Any]:
        """Rename, hide (os_hidden=True) or change properties of an image (id or unique name)."""
        return self.request("PATCH", f"providers/{provider}/images/{ref}", changes)

    def delete_image(self, provider: str, ref: str) -> None:
        self.request("DELETE", f"providers/{provider}/images/{ref}")

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def connect_kwargs(
    auth_url: str, credentials: dict[str, Any], region: str, *, v3: bool = True, **overrides: Any
) -> dict[str, Any]:
    """``openstack.connect`` keyword arguments for one simulated provider, from its credentials
    (a ProviderConfig's fields, or the control API's ``credentials``), ignoring clouds.yaml and
    OS_* env vars."""
    kwargs: dict[str, Any] = {
        "auth_url": auth_url,
        "username": credentials["username"],
        "password": credentials["password"],
        "project_name": credentials["project_name"],
        "region_name": region,
        "load_yaml_config": False,
        "load_envvars": False,
    }
    if v3:
        kwargs.update(
            user_domain_name=credentials["user_domain_name"], project_domain_name=credentials["project_domain_name"]
        )
    kwargs.update(overrides)
    return kwargs


def start_simulator(
    providers: int = 3,
    quota: int = 20,
    boot_seconds: float = 0.2,
    seed: int = 1,
    config: SimConfig | str | Path | dict[str, Any] | list[Any] | None = None,
    host: str = "127.0.0.1",
    network_layout: str = "public",
    **settings: Any,
) -> Simulator:
    """Start a simulator on a free port in a background thread.

    ``config`` overrides providers/quota/boot_seconds/network_layout/settings: a SimConfig, a
    scenario YAML path, or the parsed YAML data (list of providers or ``{"providers": [...]}``).
    ``settings`` are further runtime settings for every provider (ready_seconds=1, ssh_port=2222, ...).
    """
    if config is None:
        sim_config = default_config(providers, quota, boot_seconds, seed, network_layout, settings)
    elif isinstance(config, SimConfig):
        sim_config = config
    elif isinstance(config, (str, Path)):
        sim_config = load_config(config, seed=seed)
    else:
        sim_config = config_from_data(config, seed=seed)
    server = SimServer(sim_config)
    server.start(host, 0)
    return Simulator(server)
