"""Provider bodies from the files OpenStack users already have: clouds.yaml and OS_* env files.

Both are read by openstacksdk's own config loader, so what `openstack --os-cloud X` would use is
what we register: secure.yaml beside clouds.yaml supplies secrets, `profile:` pulls in a vendor
profile (openstacksdk's own, or one in clouds-public.yaml beside clouds.yaml), and an env file is
sourced by a shell, as a user would, and read as OS_* variables.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from pathlib import Path
from typing import Any

from oms_cli.client import CliError

_NAME = re.compile(r"[^a-z0-9-]+")
_APP_CREDENTIAL = "v3applicationcredential"


def provider_name(text: str) -> str:
    """`text` made into a provider name ([a-z0-9][a-z0-9-]{0,62})."""
    name = _NAME.sub("-", text.lower()).strip("-")[:63]
    if not name:
        raise CliError(f"cannot make a provider name from {text!r}: give --name")
    return name


def _loader(**kwargs: Any):
    # Imported here: openstacksdk is heavy, and only `import` needs it.
    from openstack.config.loader import OpenStackConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openstacksdk's deprecation notes about its own internals
        return OpenStackConfig(**kwargs)


def _regions(config, cloud: str | None) -> list:
    """Every region of every cloud, or of `cloud` only (a cloud may list several regions)."""
    from openstack import exceptions

    try:
        regions = list(config.get_all_clouds())
    except (exceptions.ConfigException, KeyError) as exc:
        raise CliError(f"cannot read the clouds: {exc}") from None
    if cloud:
        regions = [r for r in regions if r.name == cloud]
        if not regions:
            raise CliError(f"no cloud named {cloud}")
    return regions


def from_clouds_yaml(path: str | None, cloud: str | None = None) -> list[tuple[str, dict]]:
    """(cloud name, provider body) for each cloud (and region) in `path`, or only `cloud`. With no
    `path`, the clouds.yaml the `openstack` CLI would read: openstacksdk's loader looks at
    OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml and
    /etc/openstack/clouds.yaml, and takes secure.yaml and clouds-public.yaml from those places."""
    if path is None:
        from openstack.config import loader

        # The loader reads the OS_CLIENT_*_FILE variables only with every other OS_* one (which
        # would add the environment as a cloud of its own): they are put first here instead.
        config = _loader(
            config_files=[*_from_env("OS_CLIENT_CONFIG_FILE"), *loader.CONFIG_FILES],
            secure_files=[*_from_env("OS_CLIENT_SECURE_FILE"), *loader.SECURE_FILES],
            load_envvars=False,
        )
        if not config.config_filename:
            raise CliError(
                "no clouds.yaml found (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml, "
                "/etc/openstack/clouds.yaml): give --clouds-yaml FILE or --env-file FILE"
            )
        path = config.config_filename
        _check_yaml(Path(path))
    else:
        file = Path(path)
        if not file.is_file():
            raise CliError(f"no such file: {path}")
        _check_yaml(file)
        beside = file.parent
        config = _loader(
            config_files=[str(file)],
            secure_files=[str(p) for p in (beside / "secure.yaml", beside / "secure.yml") if p.is_file()],
            vendor_files=[str(p) for p in (beside / "clouds-public.yaml", beside / "clouds-public.yml") if p.is_file()],
            load_envvars=False,
        )
    regions = _regions(config, cloud)
    if not regions:
        raise CliError(f"{path} defines no clouds")
    per_cloud: dict[str, int] = {}
    for region in regions:
        per_cloud[region.name] = per_cloud.get(region.name, 0) + 1
    found = []
    for region in regions:
        name = region.name if per_cloud[region.name] == 1 else f"{region.name}-{region.region_name}"
        found.append((name, _body(region)))
    return found


def _from_env(name: str) -> list[str]:
    return [os.environ[name]] if os.environ.get(name) else []


def _check_yaml(file: Path) -> None:
    import yaml

    try:
        yaml.safe_load(file.read_text())  # openstacksdk would take a broken file for an empty one
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CliError(f"{file} is not valid YAML: {exc}") from None


def from_env_file(path: str) -> dict:
    """The provider body an `openrc`/`envrc` file describes (its OS_* variables, once sourced)."""
    if not Path(path).is_file():
        raise CliError(f"no such file: {path}")
    try:
        # What it prints (Horizon's RC file asks for the password) goes to the terminal, and what
        # it reads comes from it; only the environment it leaves comes back to us.
        sourced = subprocess.run(
            ["bash", "-c", 'set -a; . "$1" 1>&2; env -0', "oms-import", path],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")},
            stdout=subprocess.PIPE,
            timeout=600,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise CliError(f"sourcing {path} failed (exit status {exc.returncode})") from None
    except subprocess.TimeoutExpired:
        raise CliError(f"sourcing {path} did not finish in 10 minutes") from None
    try:
        text = sourced.decode()
    except UnicodeDecodeError:
        raise CliError(f"{path} sets variables that are not UTF-8 text") from None
    from unittest import mock  # only here: every other command starts faster without it

    variables = dict(line.split("=", 1) for line in text.split("\0") if line.startswith("OS_"))
    if "OS_AUTH_URL" not in variables:
        raise CliError(f"{path} sets no OS_AUTH_URL: is it an OpenStack RC file?")
    with mock.patch.dict(os.environ, variables, clear=True):
        config = _loader(load_yaml_config=False, load_envvars=True)
        [region] = _regions(config, "envvars")
    return _body(region)


def _true(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "yes", "1")


def _body(region) -> dict:
    """Our provider fields from one of openstacksdk's CloudRegion configs."""
    conf = region.config
    auth = dict(conf.get("auth") or {})
    body: dict[str, Any] = {
        "auth_url": auth.get("auth_url"),
        "region": region.region_name or None,
        "interface": conf.get("interface") or "public",
        "verify_tls": bool(conf.get("verify", True)),
    }
    # clouds.yaml's own words for "reach servers through a floating IP" (openstacksdk's auto_ip,
    # and the network floating IPs come from).
    if conf.get("floating_ip_source") not in (None, "none") and _true(conf.get("auto_ip")):
        body["floating_ip"] = "auto"
    if conf.get("floating_network"):
        body["floating_network"] = conf["floating_network"]
    if conf.get("auth_type") == _APP_CREDENTIAL or "application_credential_id" in auth:
        body["application_credential_id"] = auth.get("application_credential_id")
        body["application_credential_secret"] = auth.get("application_credential_secret")
    else:
        body.update(
            username=auth.get("username"),
            password=auth.get("password"),
            project_name=auth.get("project_name") or auth.get("tenant_name"),
            project_id=auth.get("project_id") or auth.get("tenant_id"),
            user_domain_name=auth.get("user_domain_name") or auth.get("domain_name"),
            project_domain_name=auth.get("project_domain_name") or auth.get("domain_name"),
        )
    missing = [k for k in ("auth_url", "password", "application_credential_secret") if k in body and not body[k]]
    if missing:
        raise CliError(f"cloud {region.name}: no {', '.join(missing)} (is it in secure.yaml beside clouds.yaml?)")
    return {k: v for k, v in body.items() if v is not None}
