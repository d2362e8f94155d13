"""OpenStack provider simulator: many fake clouds (Keystone, Nova, Glance, Neutron) on one port.

Unmodified openstacksdk/keystoneauth talk to it over HTTP. Start it with ``python -m sim``
or, from Python, with :func:`sim.testing.start_simulator` or :class:`sim.server.SimServer`.
"""

from sim.config import ConfigError, ProviderConfig, SimConfig, default_config, load_config
from sim.server import SimServer

__all__ = ["ConfigError", "ProviderConfig", "SimConfig", "SimServer", "default_config", "load_config"]
