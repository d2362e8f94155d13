"""Scenario configuration for the simulator: provider definitions and their tunable settings.

Both the CLI flags and a scenario YAML file end up as a :class:`SimConfig`.  The
validation of runtime settings lives here too, because the control API's PATCH
accepts exactly the same settings as the YAML file and must reject the same bad input.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODES = ("normal", "maintenance", "auth_fail", "hang")
CREATE_ERRORS = (None, 500, 503)
# Answers given after the server was made all the same (Nova's 500 can come after the create).
CREATE_ERRORS_AFTER = (None, 500)
# How a request over the rate limit is refused: OVH's 429, or an older Nova's 413 "overLimit".
RATE_LIMIT_STATUSES = (429, 413)
# How a provider's servers are reached (see sim/README.md, "Reachability"); fixed at start-up.
NETWORK_LAYOUTS = ("public", "floating", "multi", "ipv6")
# "no_multipart": only content cloud-init runs directly (ConoHa refuses MIME multipart).
USER_DATA_FORMATS = ("any", "no_multipart")

DEFAULT_IMAGES = ({"name": "ubuntu-22.04"}, {"name": "debian-12"})
DEFAULT_FLAVORS = (
    {"name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
    {"name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
)
DEFAULT_NETWORKS = ({"name": "public"},)

# Settings that may change while the simulator runs (YAML and PATCH /_sim/providers/<name>).
SETTING_NAMES = (
    "mode",
    "quota_instances",
    "quota_cores",
    "quota_ram_mb",
    "quota_ports",
    "boot_seconds",
    "latency_ms",
    "error_rate",
    "no_valid_host_rate",
    "create_error",
    "create_error_after",
    "delete_seconds",
    "floating_ip_quota",
    "floating_ip_router",
    "floating_ip_delay_seconds",
    "floating_ip_answer_seconds",
    "security_groups_open",
    "ssh_port",
    "ready_seconds",
    "user_data_formats",
    "user_data_max_bytes",
    "rate_limit_per_second",
    "rate_limit_burst",
    "rate_limit_retry_after",
    "rate_limit_status",
)
# Fixed at start-up: identity and inventory of the provider.
STATIC_NAMES = (
    "name",
    "region",
    "username",
    "password",
    "project_name",
    "user_domain_name",
    "project_domain_name",
    "application_credential_id",
    "application_credential_secret",
    "application_credential_name",
    "token_ttl_seconds",
    "images",
    "flavors",
    "networks",
    "network_layout",
)
ALIASES = {"quota": "quota_instances", "region_name": "region"}


class ConfigError(ValueError):
    """Raised for any invalid scenario or control-API input; the message is user-facing."""


@dataclass
class Settings:
    """The knobs a test flips at runtime to make a provider misbehave."""

    mode: str = "normal"
    quota_instances: int = 20
    # vCPUs and RAM (MiB) the project may hold, counted from its servers' flavors (-1: unlimited,
    # as most clouds but not all say), and Neutron ports (one per server and network).
    quota_cores: int = -1
    quota_ram_mb: int = -1
    quota_ports: int = 500
    boot_seconds: float = 2.0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    no_valid_host_rate: float = 0.0
    create_error: int | None = None
    # 500: every create makes its server, then answers 500 (the client cannot know it was made).
    create_error_after: int | None = None
    # Seconds a delete takes: meanwhile the server shows task_state "deleting" and counts on quota.
    delete_seconds: float = 0.0
    floating_ip_quota: int = 10
    # False plays a tenant subnet with no router to the external network: associating fails.
    floating_ip_router: bool = True
    # Real clouds take a moment before an attached floating IP shows in the server's addresses.
    floating_ip_delay_seconds: float = 0.5
    # A slow Neutron: seconds from creating a floating IP until the create is answered. A client
    # that dies meanwhile never learns of the one it made (crash tests play that window).
    floating_ip_answer_seconds: float = 0.0
    # OVH-like: every port is reachable whatever the security groups say.
    security_groups_open: bool = False
    # Port of the simulated sshd; applies to listeners opened after a change.
    ssh_port: int = 22
    # Seconds from ACTIVE until sshd answers and cloud-init prints the host keys.
    ready_seconds: float = 0.0
    user_data_formats: str = "any"
    user_data_max_bytes: int | None = None
    # Requests a second the account takes, every API together (None: no limit); over it each
    # answers `rate_limit_status` with `Retry-After: rate_limit_retry_after`.
    rate_limit_per_second: float | None = None
    # Requests that may come at once after a quiet spell (None: one second's worth).
    rate_limit_burst: int | None = None
    rate_limit_retry_after: int = 1
    rate_limit_status: int = 429

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ProviderConfig:
    """Everything needed to build one simulated provider."""

    name: str
    region: str = "RegionOne"
    username: str = "demo"
    password: str = "secret"
    project_name: str = "demo"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    application_credential_id: str | None = None
    application_credential_secret: str | None = None
    application_credential_name: str | None = None
    token_ttl_seconds: float = 3600.0
    images: list[dict[str, Any]] = field(default_factory=lambda: [dict(i) for i in DEFAULT_IMAGES])
    flavors: list[dict[str, Any]] = field(default_factory=lambda: [dict(f) for f in DEFAULT_FLAVORS])
    networks: list[dict[str, Any]] = field(default_factory=lambda: [dict(n) for n in DEFAULT_NETWORKS])
    network_layout: str = "public"
    settings: Settings = field(default_factory=Settings)


@dataclass
class SimConfig:
    """A whole scenario: the seed plus the providers to serve."""

    providers: list[ProviderConfig]
    seed: int = 0


def _number(key: str, value: Any, *, low: float, high: float = math.inf, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if not (low <= value <= high) or math.isnan(value):
        bound = f"between {low} and {high}" if high != math.inf else f">= {low}"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")
    return int(value) if integer else float(value)


def validate_settings(raw: Any) -> dict[str, Any]:
    """Check a partial settings mapping and return it normalised; raise ConfigError otherwise."""
    if not isinstance(raw, dict):
        raise ConfigError("settings must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = ALIASES.get(key, key)
        if key == "mode":
            if value not in MODES:
                raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {value!r}")
            out[key] = value
        elif key in ("quota_instances", "quota_cores", "quota_ram_mb", "quota_ports"):
            # -1 is Nova's spelling of "unlimited".
            out[key] = int(_number(key, value, low=-1, integer=True))
        elif key == "boot_seconds":
            out[key] = _number(key, value, low=0)
        elif key == "latency_ms":
            out[key] = _number(key, value, low=0, high=600_000)
        elif key in ("error_rate", "no_valid_host_rate"):
            out[key] = _number(key, value, low=0, high=1)
        elif key in ("floating_ip_quota",):
            out[key] = int(_number(key, value, low=-1, integer=True))
        elif key in ("floating_ip_router", "security_groups_open"):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false, got {value!r}")
            out[key] = value
        elif key in ("floating_ip_delay_seconds", "floating_ip_answer_seconds", "ready_seconds", "delete_seconds"):
            out[key] = _number(key, value, low=0, high=3600)
        elif key == "ssh_port":
            out[key] = int(_number(key, value, low=1, high=65535, integer=True))
        elif key == "user_data_formats":
            if value not in USER_DATA_FORMATS:
                raise ConfigError(f"user_data_formats must be one of {', '.join(USER_DATA_FORMATS)}; got {value!r}")
            out[key] = value
        elif key == "user_data_max_bytes":
            out[key] = None if value is None else int(_number(key, value, low=1, high=65535, integer=True))
        elif key == "rate_limit_per_second":
            out[key] = None if value is None else _number(key, value, low=0.01, high=100_000)
        elif key == "rate_limit_burst":
            out[key] = None if value is None else int(_number(key, value, low=1, high=100_000, integer=True))
        elif key == "rate_limit_retry_after":
            out[key] = int(_number(key, value, low=0, high=3600, integer=True))
        elif key == "rate_limit_status":
            if isinstance(value, bool) or value not in RATE_LIMIT_STATUSES:
                raise ConfigError(f"rate_limit_status must be 429 or 413; got {value!r}")
            out[key] = value
        elif key in STATIC_NAMES:
            raise ConfigError(f"{key} is fixed when the simulator starts; it cannot be changed at runtime")
        elif key == "create_error":
            if isinstance(value, bool) or value not in CREATE_ERRORS:
                raise ConfigError(f"create_error must be null, 500 or 503; got {value!r}")
            out[key] = value
        elif key == "create_error_after":
            if isinstance(value, bool) or value not in CREATE_ERRORS_AFTER:
                raise ConfigError(f"create_error_after must be null or 500; got {value!r}")
            out[key] = value
        else:
            raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(SETTING_NAMES)}")
    return out


def _inventory(key: str, extra: Any, defaults: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    items = [dict(d) for d in defaults]
    if extra is None:
        return items
    if not isinstance(extra, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in extra):
        raise ConfigError(f"{key} must be a list of mappings, each with a string 'name'")
    by_name = {i["name"]: i for i in items}
    for item in extra:
        # Naming a default item changes its attributes (e.g. the "public" network unshared).
        if item["name"] in by_name:
            by_name[item["name"]].update(item)
        else:
            items.append(dict(item))
    return items


def _layout(value: Any) -> str:
    if value not in NETWORK_LAYOUTS:
        raise ConfigError(f"network_layout must be one of {', '.join(NETWORK_LAYOUTS)}; got {value!r}")
    return value


def provider_from_mapping(raw: Any, defaults: Settings | None = None) -> ProviderConfig:
    """Build one ProviderConfig from a scenario entry (flat keys or a ``credentials`` sub-mapping)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"each provider must be a mapping, got {raw!r}")
    flat = dict(raw)
    creds = flat.pop("credentials", None) or {}
    if not isinstance(creds, dict):
        raise ConfigError("credentials must be a mapping")
    flat.update(creds)
    app_cred = flat.pop("application_credential", None)
    if app_cred is not None:
        if not isinstance(app_cred, dict):
            raise ConfigError("application_credential must be a mapping with id and secret")
        for k in ("id", "secret", "name"):
            if k in app_cred:
                flat[f"application_credential_{k}"] = app_cred[k]
    if "project" in flat:
        flat["project_name"] = flat.pop("project")
    if "domain" in flat:
        domain = flat.pop("domain")
        flat.setdefault("user_domain_name", domain)
        flat.setdefault("project_domain_name", domain)
    name = flat.pop("name", None)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("_"):
        raise ConfigError(f"provider name must be a non-empty string without '/' or leading '_': {name!r}")
    settings = dataclasses.replace(defaults or Settings())
    settings_raw = {k: flat.pop(k) for k in list(flat) if ALIASES.get(k, k) in SETTING_NAMES}
    for key, value in validate_settings(settings_raw).items():
        setattr(settings, key, value)
    cfg = ProviderConfig(name=name, settings=settings)
    for key, value in flat.items():
        key = ALIASES.get(key, key)
        if key in ("images", "flavors", "networks"):
            defaults_for = {"images": DEFAULT_IMAGES, "flavors": DEFAULT_FLAVORS, "networks": DEFAULT_NETWORKS}
            setattr(cfg, key, _inventory(key, value, defaults_for[key]))
        elif key == "token_ttl_seconds":
            cfg.token_ttl_seconds = _number(key, value, low=1)
        elif key == "network_layout":
            cfg.network_layout = _layout(value)
        elif key in STATIC_NAMES:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key} must be a string, got {value!r}")
            setattr(cfg, key, value)
        else:
            raise ConfigError(f"provider {name!r}: unknown key {key!r}")
    if bool(cfg.application_credential_id) != bool(cfg.application_credential_secret):
        raise ConfigError(f"provider {name!r}: application credential needs both id and secret")
    return cfg


def default_config(
    providers: int = 3,
    quota: int = 20,
    boot_seconds: float = 2.0,
    seed: int = 0,
    network_layout: str = "public",
    settings: dict[str, Any] | None = None,
) -> SimConfig:
    """The CLI's default scenario: providers p1..pN with the demo credentials.

    ``settings`` are any further runtime settings (ready_seconds, ssh_port, ...) for every provider.
    """
    if providers < 1:
        raise ConfigError("need at least one provider")
    layout = _layout(network_layout)
    common = Settings(**validate_settings({"quota_instances": quota, "boot_seconds": boot_seconds, **(settings or {})}))
    return SimConfig(
        providers=[
            ProviderConfig(name=f"p{i}", network_layout=layout, settings=dataclasses.replace(common))
            for i in range(1, providers + 1)
        ],
        seed=seed,
    )


def config_from_data(data: Any, seed: int | None = None) -> SimConfig:
    """Build a SimConfig from parsed YAML: a list of providers, or a mapping with ``providers``."""
    defaults = Settings()
    file_seed = 0
    if isinstance(data, dict):
        unknown = set(data) - {"providers", "seed", "defaults"}
        if unknown:
            raise ConfigError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
        file_seed = data.get("seed", 0)
        if isinstance(file_seed, bool) or not isinstance(file_seed, int):
            raise ConfigError("seed must be an integer")
        for key, value in validate_settings(data.get("defaults") or {}).items():
            setattr(defaults, key, value)
        data = data.get("providers")
    if not isinstance(data, list) or not data:
        raise ConfigError("a scenario needs a non-empty list of providers")
    providers = [provider_from_mapping(p, defaults) for p in data]
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate provider names in {names}")
    return SimConfig(providers=providers, seed=file_seed if seed is None else seed)


def load_config(path: str | Path, seed: int | None = None) -> SimConfig:
    """Read a scenario YAML file; ``seed`` (when given) overrides the file's seed."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from exc
    return config_from_data(data, seed)
