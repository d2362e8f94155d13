"""Demo mode: the local stack plus the OpenStack simulator with three providers registered.

A newcomer can request instances at once, with no OpenStack account: providers demo-p1..demo-p3
(simulated accounts p1..p3, quota 20 each, 2 s boot) all map label `ubuntu-small`.
"""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist

from sim.config import default_config
from sim.server import SimServer

LABEL = "ubuntu-small"


def start_simulator(host: str, port: int, providers: int = 3) -> SimServer:
    server = SimServer(default_config(providers=providers, quota=20, boot_seconds=2.0, seed=1))
    server.start(host, port)
    return server


def register_providers(server: SimServer) -> list[str]:
    """Register each simulated account as provider demo-<name> (once; kept across restarts)."""
    from chalicelib import models, providers

    names = []
    for sim_name in server.providers:
        name = f"demo-{sim_name}"
        names.append(name)
        try:
            models.Provider.get(name)
            continue
        except DoesNotExist:
            pass
        providers.create(
            {
                "name": name,
                "auth_url": server.auth_url(sim_name),
                "region": "RegionOne",
                "username": "demo",
                "password": "secret",
                "project_name": "demo",
                "max_instances": 20,
                "labels": {LABEL: {"image": "ubuntu-22.04", "flavor": "m1.small", "network": "public"}},
            }
        )
    return names
