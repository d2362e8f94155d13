"""Demo mode: the local stack plus the OpenStack simulator with six providers registered.

The mission at a glance: about 100 instances at once over accounts of 20, one of them in
maintenance. A newcomer can request instances at once, with no OpenStack account: providers
demo-p1..demo-p6 (simulated accounts p1..p6, quota 20 each, 2 s boot) all map label
`ubuntu-small`; demo-p6 is in maintenance (every call answers 503: its circuit opens and its
share fails over to the others, so 100 fit in the five that work); demo-p3 gives
servers only private addresses, so its instances get floating IPs. An instance is ready once its
(simulated) sshd answers, on SSH_PORT: demo-p1 and demo-p2 let every port in, as OVH does;
demo-p3's default security group lets nothing in, so the provider ensures one that lets SSH in.
"""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist

from sim.config import default_config
from sim.server import SimServer

LABEL = "ubuntu-small"


# The last account is one of the clouds that give servers only private addresses: its instances
# are reached through floating IPs, behind a security group made to let SSH in.
PRIVATE_ONLY = "p3"
# Instances of the label kept booted: the first ten of a request are there at once.
DEMO_POOL = 10
# One account is in maintenance, as one of many usually is.
IN_MAINTENANCE = "p6"
PROVIDERS = 6
# Where the simulated sshd listens (on each server's loopback address): 22 would need root.
SSH_PORT = 2222


def start_simulator(host: str, port: int, providers: int = PROVIDERS) -> SimServer:
    config = default_config(providers=providers, quota=20, boot_seconds=2.0, seed=1, settings={"ssh_port": SSH_PORT})
    for provider in config.providers:
        if provider.name == PRIVATE_ONLY:
            provider.network_layout = "floating"
        else:
            provider.settings.security_groups_open = True
        if provider.name == IN_MAINTENANCE:
            provider.settings.mode = "maintenance"
    server = SimServer(config)
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
        private_only = sim_name == PRIVATE_ONLY
        reach = {"floating_ip": "auto", "ssh_security_group": "oms-ssh"} if private_only else {}
        network = "private" if private_only else "public"
        providers.create(
            {
                "name": name,
                "auth_url": server.auth_url(sim_name),
                "region": "RegionOne",
                "username": "demo",
                "password": "secret",
                "project_name": "demo",
                "max_instances": 20,
                "labels": {
                    LABEL: {
                        "image": "ubuntu-22.04",
                        "flavor": "m1.small",
                        "network": network,
                        "ready": "ssh",
                        "ssh_port": SSH_PORT,
                    }
                },
                **reach,
            }
        )
    return names


def keep_warm_pool() -> int:
    """Keep DEMO_POOL instances of the label booted (once; an admin's change is kept across
    restarts): a request takes them at once. Returns the pool's number."""
    from chalicelib import models, pools

    try:
        return int(models.Pool.get(LABEL).min_ready)
    except DoesNotExist:
        return int(pools.put(LABEL, {"min_ready": DEMO_POOL}).min_ready)
