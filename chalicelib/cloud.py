"""The cloud adapter: the only module that imports openstacksdk.

Connections are cached per provider (and credential version) for the life of the process, so a
warm function reuses its token. Every call has connect and read timeouts. Exceptions are mapped
to the error classes of DESIGN.md, which is all the rest of the code ever sees of OpenStack.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import openstack
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from chalicelib import credentials, models

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 20

QUOTA, CAPACITY, AUTH, UNAVAILABLE = "quota", "capacity", "auth", "unavailable"
CONFIG, BUILD_FAILED, TIMEOUT, UNKNOWN = "config", "build_failed", "timeout", "unknown"


class CloudError(Exception):
    """A provider call failed; `error_class` says what that means for placement."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_instances: int
    used_instances: int


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
    secret = credentials.load(provider.secret_arn, provider.secret_version)
    auth_type, auth = _auth_args(provider, secret)
    return openstack.connect(
        load_yaml_config=False,
        load_envvars=False,
        auth_type=auth_type,
        auth=auth,
        region_name=provider.region,
        interface=provider.interface,
        verify=provider.verify_tls,
        api_timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
        connect_retries=0,
        status_code_retries=0,
    )


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


def classify(error: Exception) -> CloudError:
    """Map an openstacksdk/keystoneauth exception to an error class (DESIGN.md's table)."""
    if isinstance(error, CloudError):
        return error
    message = str(error).strip() or error.__class__.__name__
    text = message.lower()
    if isinstance(error, ks_exc.Unauthorized | ks_exc.EmptyCatalog | ks_exc.EndpointNotFound | ks_exc.NoMatchingPlugin):
        return CloudError(AUTH, message)
    if isinstance(
        error, ks_exc.ConnectFailure | ks_exc.ConnectionError | ks_exc.RequestTimeout | ks_exc.DiscoveryFailure
    ):
        return CloudError(UNAVAILABLE, message)
    status = getattr(error, "status_code", None) or getattr(error, "http_status", None)
    if "quota" in text and ("exceed" in text or status in (403, 413)):
        return CloudError(QUOTA, message)
    if "no valid host" in text:
        return CloudError(CAPACITY, message)
    if status == 401:
        return CloudError(AUTH, message)
    if status in (400, 404) or isinstance(error, os_exc.ResourceNotFound | os_exc.BadRequestException):
        return CloudError(CONFIG, message)
    if status is not None and (status >= 500 or status == 429):
        return CloudError(UNAVAILABLE, message)
    if isinstance(error, os_exc.ResourceTimeout):
        return CloudError(TIMEOUT, message)
    return CloudError(UNKNOWN, message)


def limits(provider: models.Provider) -> Limits:
    """Authenticate and read the provider's instance quota (`GET /limits`)."""
    try:
        absolute = connection(provider).compute.get_limits().absolute
        return Limits(int(absolute.instances), int(absolute.instances_used))
    except Exception as error:  # every failure leaves this module classified
        raise classify(error) from error
