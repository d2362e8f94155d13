"""The one place that knows the API's JSON: body schemas, answer schemas, and the views that shape answers.

Body schemas are plain JSON Schema, enforced by `validate` keyword for keyword, so the contract a
client reads at `/openapi.json` is the one the server applies. Where a rule needs words a schema
cannot say, the schema still states it and a function here explains it: the choice of one
credential (`oneOf`, explained by `check_provider`), a parseable SSH key (format
`openssh-public-key`), and an http(s) URL without credentials (format `uri` plus a pattern).
Each answer's schema sits next to the view that produces it, and a test holds one to the other.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from chalicelib import (
    addresses,
    auth,
    canary,
    eta,
    faults,
    maintenance,
    models,
    pages,
    placement,
    pools,
    reach,
    timeutil,
    userdata,
)
from chalicelib.errors import ERROR, invalid
from chalicelib.validator import REF_PREFIX, Explained, Validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# http(s), a host name or address, an optional port, printable URI characters after; no
# user:password@ (credentials go in their own fields) and nothing a URI may not hold.
_PORT = r"(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
HTTP_URL_PATTERN = (
    r"^https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])"
    + _PORT
    + r"([/?#]([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$"
)
USER_DATA_MAX_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024

_text = {"type": "string", "minLength": 1, "maxLength": 255}

LABEL_MAPPING = {
    "type": "object",
    "additionalProperties": False,
    "required": ["image", "flavor"],
    "properties": {
        "image": {
            "description": "a name or id (of several images with one name, the newest by created_at), or image "
            'properties every candidate must have, e.g. {"os_distro": "ubuntu", "os_version": "22.04"}: the newest '
            "active image with them, whatever it is named (clouds rename and rotate images)",
            "oneOf": [
                _text,
                {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 20,
                    "propertyNames": {"pattern": r"^[A-Za-z0-9_.:-]{1,255}$"},
                    "additionalProperties": _text,
                },
            ],
        },
        "flavor": {
            "description": "a name or id, or a minimum: the smallest enabled flavor (vCPUs, then RAM, then disk) with "
            "at least min_vcpus and min_ram_mb (one with a 0 GB disk only when the label sets volume_size)",
            "oneOf": [
                _text,
                {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": False,
                    "properties": {
                        "min_vcpus": {"type": "integer", "minimum": 1, "maximum": 1024},
                        "min_ram_mb": {"type": "integer", "minimum": 1, "maximum": 16777216},
                    },
                },
            ],
        },
        "network": _text,
        "security_groups": {"type": "array", "maxItems": 20, "items": _text},
        "ready": {
            "type": "string",
            "enum": list(reach.READINESS),
            "description": "ssh (what a label written without it gets): ACTIVE once sshd answers on ssh_port (host "
            "keys read); active: once Nova says so (as labels stored before ssh was the default still do)",
        },
        "ssh_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "volume_size": {
            "type": "integer",
            "minimum": 1,
            "maximum": 2000,
            "description": "boot from a volume of this many GB made from the image (deleted with the server): "
            "flavors with a 0 GB disk, and clouds that boot only from volumes, need it",
        },
        "config_drive": {"type": "boolean", "description": "attach a config drive (where no metadata service is)"},
    },
}

MAINTENANCE_WINDOW = {
    "type": "object",
    "additionalProperties": False,
    "required": ["start", "end"],
    "properties": {
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "note": {"type": "string", "maxLength": maintenance.NOTE_MAX},
    },
}

PROVIDER_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "pattern": NAME_PATTERN},
    "auth_url": {"type": "string", "format": "uri", "pattern": HTTP_URL_PATTERN, "minLength": 1, "maxLength": 2048},
    "region": _text,
    "project_name": _text,
    "project_id": _text,
    "user_domain_name": _text,
    "project_domain_name": _text,
    "username": _text,
    "password": {"type": "string", "minLength": 1, "maxLength": 1024, "writeOnly": True},
    "application_credential_id": _text,
    "application_credential_secret": {
        "type": "string",
        "minLength": 1,
        "maxLength": 1024,
        "writeOnly": True,
    },
    "interface": {"type": "string", "enum": ["public", "internal", "admin"]},
    "verify_tls": {"type": "boolean"},
    "max_instances": {"type": "integer", "minimum": 1, "maximum": 10000},
    "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
    "enabled": {"type": "boolean"},
    "floating_ip": {
        "type": "string",
        "enum": list(addresses.FLOATING_IP_MODES),
        "description": "auto: give each instance a floating IP once ACTIVE (clouds that give only private addresses)",
    },
    "floating_network": {**_text, "description": "the external network to take floating IPs from (default: the first)"},
    "ssh_security_group": {
        **_text,
        "description": "a security group to ensure (made if missing, with tcp/22 and each label's ssh_port "
        "open for IPv4 and IPv6) and give every server: clouds whose default group lets nothing in",
    },
    "canary_label": {
        **_text,
        "description": "with canary_every_hours: the label a scheduled canary boot proves while the provider is idle",
    },
    "canary_every_hours": {
        "type": "integer",
        "minimum": 1,
        "maximum": 720,
        "description": "boot a canary of canary_label this often while no instance of ours runs there (health)",
    },
    "address_family": {
        "type": "string",
        "enum": list(addresses.FAMILIES),
        "description": "the family of the address to SSH to (access_ip) when a server has both: ipv4 (default) "
        "or ipv6 (clouds where IPv4 is scarce or extra)",
    },
    "boot_timeout_seconds": {
        "type": "integer",
        "minimum": 30,
        "maximum": 7200,
        "description": "how long an instance there may take from its launch to ready (ACTIVE, its floating IP "
        "shown, sshd answering) before it is deleted and fails over; null: the deployment's default",
    },
    "multipart_user_data": {
        "type": "boolean",
        "description": "false for clouds that refuse MIME multipart user data (ConoHa): a script and the SSH key "
        "then go as one #cloud-config, and user data that needs MIME to go with a key fails over as config",
    },
    "rate_limit_per_second": {
        "type": "number",
        "minimum": 0.01,
        "maximum": 10000,
        "description": "the most HTTP requests a second we make to the account (tokens and discovery "
        "included), from each function instance (set it a little below the cloud's published limit: OVH "
        "20/s); null: no limit. A 429 or 413 with Retry-After is waited out and retried whatever it says "
        "here, and never counts on health",
    },
    "max_concurrent_creates": {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "the most server creates under way at once at the account, from each function instance "
        f"(default {models.DEFAULT_CONCURRENT_CREATES})",
    },
    "labels": {
        "type": "object",
        "maxProperties": 100,
        "propertyNames": {"pattern": LABEL_PATTERN},
        "additionalProperties": LABEL_MAPPING,
    },
    "maintenance": {
        "type": "array",
        "maxItems": maintenance.MAX_WINDOWS,
        "description": "announced maintenance windows (end after start; ended ones are dropped): while one is "
        "on, no call goes to the provider (deletes wait for its end), and no instance is placed there whose "
        "expiry is after the start of a window to come. The whole list is written at once",
        "items": MAINTENANCE_WINDOW,
    },
}
PROVIDER_DEFAULTS = {
    "user_domain_name": "Default",
    "project_domain_name": "Default",
    "interface": "public",
    "verify_tls": True,
    "max_instances": 20,
    "priority": 100,
    "enabled": True,
    "floating_ip": addresses.FLOATING_IP_NEVER,
    "address_family": addresses.IPV4,
    "multipart_user_data": True,
    "max_concurrent_creates": models.DEFAULT_CONCURRENT_CREATES,
    "labels": {},
    "maintenance": [],
}
PASSWORD_FIELDS = ("username", "password")
APP_CREDENTIAL_FIELDS = ("application_credential_id", "application_credential_secret")
SECRET_FIELDS = ("password", "application_credential_secret")


def nullable(schema: dict) -> dict:
    """`schema`, or null: an optional field's null means "not given" (in PATCH, "back to the default")."""
    out = {**schema, "type": [schema["type"], "null"]}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def body_schema(properties: dict, *, required: tuple[str, ...], never_null: tuple[str, ...] = (), **extra: Any) -> dict:
    """A request body: an object of exactly these fields, the optional ones nullable unless a null
    would leave nothing in their place (`never_null`)."""
    keep = set(required) | set(never_null)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(required),
        "properties": {k: v if k in keep else nullable(v) for k, v in properties.items()},
        **extra,
    }


def _given(*fields: str) -> dict:
    return {"required": list(fields), "properties": {f: {"type": "string"} for f in fields}}


def _not_given(*fields: str) -> dict:
    return {"properties": {f: {"type": "null"} for f in fields}}  # absent, or null


def _all_of(*parts: dict) -> dict:
    return {"allOf": list(parts)}


def check_provider(merged: dict) -> None:
    """One complete kind of credential, in words naming the field: PROVIDER_CREATE's `oneOf`,
    and the same rule on a PATCH once merged with the provider it changes."""
    has_password = any(merged.get(k) for k in PASSWORD_FIELDS)
    has_app_cred = any(merged.get(k) for k in APP_CREDENTIAL_FIELDS)
    if has_password and has_app_cred:
        raise invalid(
            "give either username + password or application_credential_id + application_credential_secret, not both",
            "password" if merged.get("password") else "username",
        )
    if not has_password and not has_app_cred:
        raise invalid("credentials are required: username + password, or an application credential", "username")
    fields = PASSWORD_FIELDS if has_password else APP_CREDENTIAL_FIELDS
    for key in fields:
        if not merged.get(key):
            raise invalid(f"{key} is required with this kind of credential", key)
    if has_password and not (merged.get("project_name") or merged.get("project_id")):
        raise invalid("project_name or project_id is required with password credentials", "project_name")


PROVIDER_CREATE = body_schema(
    PROVIDER_FIELDS,
    required=("name", "auth_url"),
    # Exactly one kind of credential; check_provider says which field is wrong, and why.
    oneOf=Explained(
        [
            _all_of(
                _given(*PASSWORD_FIELDS),
                _not_given(*APP_CREDENTIAL_FIELDS),
                {"anyOf": [_given("project_name"), _given("project_id")]},
            ),
            _all_of(_given(*APP_CREDENTIAL_FIELDS), _not_given(*PASSWORD_FIELDS)),
        ],
        check_provider,
    ),
)


# The name is the provider's key: it is in the path, and cannot be changed.
# The URL has no default to go back to, so a PATCH cannot null it.
def _one_kind_of_credential(patch: dict) -> None:
    """Why a PATCH that gives both kinds of credential is refused, naming the field."""
    raise invalid(
        "give either username + password or application_credential_id + application_credential_secret, not both",
        "password" if patch.get("password") else "username",
    )


PROVIDER_PATCH = body_schema(
    {k: v for k, v in PROVIDER_FIELDS.items() if k != "name"},
    required=(),
    never_null=("auth_url",),
    # At most one kind of credential in one change (what the change leaves is checked on the
    # provider it changes: 422 when incomplete).
    anyOf=Explained(
        [_not_given(*PASSWORD_FIELDS), _not_given(*APP_CREDENTIAL_FIELDS)],
        _one_kind_of_credential,
    ),
)

REQUEST_CREATE = body_schema(
    {
        "label": {"type": "string", "pattern": LABEL_PATTERN},
        "count": {"type": "integer", "minimum": 1, "maximum": 1000},
        "lifetime_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
        "name_prefix": {"type": "string", "pattern": r"^[a-z0-9-]{1,32}$"},
        "ssh_public_key": {"type": "string", "format": "openssh-public-key", "minLength": 1, "maxLength": 16384},
        "user_data": {
            "type": "string",
            "maxLength": USER_DATA_MAX_BYTES,
            "description": "cloud-init user data, at most 16 KiB once UTF-8 encoded",
        },
        "client_token": {"type": "string", "pattern": r"^[\x20-\x7e]{1,64}$"},
        "callback_url": {
            "type": "string",
            "format": "uri",
            "pattern": HTTP_URL_PATTERN,
            "maxLength": 2048,
            "description": "POST signed events (ready, failed, expiring) here: https to a host whose every address "
            "is public (http to 127.0.0.1, [::1] or localhost on the local stack only); see API.md, Callbacks",
        },
        "start_at": {
            "type": "string",
            "format": "date-time",
            "description": "schedule the request: its instances are launched to be ready by then (in the future, "
            "at most OMS_SCHEDULE_MAX_DAYS, default 7, days ahead); the lifetime counts from it",
        },
    },
    required=("label", "count"),
)
EXTEND = body_schema({"minutes": {"type": "integer", "minimum": 1, "maximum": 1440}}, required=("minutes",))
# A warm pool (pools.py). Times of day are "HH:MM" (to may be 24:00), checked in words by pools.check.
_POOL_WINDOW = {
    "type": "object",
    "additionalProperties": False,
    "required": ["days", "from", "to", "min_ready"],
    "properties": {
        "days": {
            "type": "array",
            "minItems": 1,
            "maxItems": 7,
            "items": {"type": "string", "enum": list(pools.DAYS)},
            "description": "the days the window starts on",
        },
        "from": {"type": "string", "pattern": pools.TIME_OF_DAY, "description": "its start, HH:MM in time_zone"},
        "to": {
            "type": "string",
            "pattern": pools.TIME_OF_DAY,
            "description": "its end (not included), HH:MM or 24:00; at or before from, it ends the next day",
        },
        "min_ready": {"type": "integer", "minimum": 0, "maximum": 1000},
    },
}
POOL_PUT = body_schema(
    {
        "min_ready": {
            "type": "integer",
            "minimum": 0,
            "maximum": 1000,
            "description": "instances kept ready outside the schedule's windows",
        },
        "schedule": {
            "type": "array",
            "maxItems": pools.MAX_WINDOWS,
            "items": _POOL_WINDOW,
            "description": "windows of the week with their own min_ready; the first that holds wins",
        },
        "time_zone": {"type": "string", "format": "iana-time-zone", "description": "IANA name; default UTC"},
        "max_idle_minutes": {
            "type": "integer",
            "minimum": 5,
            "maximum": 1440,
            "description": f"an idle instance is replaced after this long (default {pools.DEFAULT_IDLE_MINUTES})",
        },
        "ssh_public_key": {
            "type": "string",
            "format": "openssh-public-key",
            "minLength": 1,
            "maxLength": 16384,
            "description": "pool instances boot with it: requests asking for this key (or none) may take them",
        },
    },
    required=("min_ready",),
)
KEY_CREATE = body_schema(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[^\x00-\x1f]+$"},
        "role": {"type": "string", "enum": list(auth.ROLES)},
    },
    required=("name", "role"),
)


# --- formats: the checks that say in words what is wrong ------------------------------------


def _validate_http_url(value: str, field: str) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise invalid(f"{field} is not a valid URL", field) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"{field} must be an http(s) URL", field)
    if parts.username is not None or parts.password is not None:
        raise invalid(f"{field} must not carry credentials: use the credential fields", field)


_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z")


def _check_date_time(value: str, field: str) -> None:
    """RFC 3339, as every timestamp of ours is written (`timeutil.iso`)."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        valid = False
    else:
        valid = _DATE_TIME.match(value) is not None
    if not valid:
        raise invalid(f"{field} must be a date-time such as 2026-11-25T17:00:00Z", field)


_SSH_KEY_TYPES = (
    "ssh-rsa",
    "ssh-ed25519",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def check_ssh_public_key(text: str, field: str = "ssh_public_key") -> None:
    """One OpenSSH public key line: `type base64 [comment]`, the blob naming the same type."""
    if "\n" in text.strip() or "\r" in text.strip():
        raise invalid(f"{field} must be a single line", field)
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        raise invalid(f"{field} must be an OpenSSH public key line such as 'ssh-ed25519 AAAA... me@host'", field)
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise invalid(f"{field} has a key body that is not valid base64 key data", field) from exc
    if embedded != parts[0] or len(blob) <= 4 + length:
        raise invalid(f"{field}'s key data does not match its type", field)


# --- request rules beyond the schema --------------------------------------------------------


def check_request(body: dict) -> None:
    user_data = body.get("user_data")
    if user_data is None:
        return
    if len(user_data.encode()) > USER_DATA_MAX_BYTES:
        raise invalid("user_data must be at most 16 KiB", "user_data")
    if user_data.startswith(userdata.CLOUD_CONFIG):
        # It is merged with the SSH key into one #cloud-config: it must be one cloud-init can read.
        try:
            userdata.parse_cloud_config(user_data)
        except userdata.NotCloudConfig as error:
            raise invalid(f"user_data: {error}", "user_data") from None


# --- answers: each view next to the schema of what it returns -------------------------------


def ref(name: str) -> dict:
    return {"$ref": REF_PREFIX + name}


_ts = {"type": ["string", "null"], "format": "date-time"}
_PERCENTILES = {
    "type": "object",
    "required": ["median", "p90"],
    "properties": {"median": {"type": ["number", "null"]}, "p90": {"type": ["number", "null"]}},
}
_str_or_null = {"type": ["string", "null"]}


def _list_of(name: str) -> dict:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {"items": {"type": "array", "items": ref(name)}, "next": _str_or_null},
    }


def list_view(items: list, cursor: str | None) -> dict:
    return {"items": items, "next": cursor}


HEALTH = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def health_view() -> dict:
    return {"status": "ok"}


USER_PROVIDER_FIELDS = ("name", "region", "enabled", "labels", "maintenance", "health", "capacity", "launch_times")

CHECK_REQUEST = body_schema(
    {
        "boot": {
            **_text,
            "description": "a label to boot a canary of: one server made, followed through every step, deleted",
        }
    },
    required=(),
)
CANARY_STEP = {
    "type": "object",
    "required": ["step", "ok", "seconds", "detail"],
    "properties": {
        "step": {"type": "string", "enum": list(canary.STEPS)},
        "ok": {"type": ["boolean", "null"], "description": "null: skipped, as the settings ask"},
        "seconds": {"type": "number"},
        "detail": {"type": "string"},
        "error_class": {"type": "string"},
    },
}
CANARY = {
    "type": "object",
    "required": ["id", "label", "trigger", "state", "started_at", "steps"],
    "properties": {
        "id": {"type": "string"},
        "label": {"type": "string"},
        "trigger": {"type": "string", "enum": [canary.ASKED, canary.SCHEDULED]},
        "state": {"type": "string", "enum": list(canary.STATES)},
        "started_at": _ts,
        "finished_at": _ts,
        "seconds": {"type": "number"},
        "server_id": _str_or_null,
        "steps": {"type": "array", "items": CANARY_STEP},
        "failed_step": {"type": "string"},
        "error": {"type": "string"},
    },
}
_CANARY_VIEW_FIELDS = tuple(CANARY["properties"])


def canary_view(record: dict | None) -> dict | None:
    return None if record is None else {k: record[k] for k in _CANARY_VIEW_FIELDS if k in record}


QUOTA_ROOM = {
    "type": "object",
    "required": ["limit", "used", "room", "per_instance", "instances"],
    "properties": {
        "limit": {"type": "integer", "description": "the account's quota, in the resource's units (RAM: MiB)"},
        "used": {"type": "integer", "description": "what the whole project uses, ours included"},
        "room": {"type": "integer", "description": "what we may hold: the limit less what others use"},
        "per_instance": {
            "type": "integer",
            "description": "what one instance of ours takes: the biggest footprint of the provider's labels",
        },
        "instances": {"type": "integer", "description": "the instances of ours the room takes"},
    },
}

PROVIDER = {
    "type": "object",
    "required": list(USER_PROVIDER_FIELDS),
    "properties": {
        **{k: v for k, v in PROVIDER_FIELDS.items() if k not in SECRET_FIELDS},
        "region": _str_or_null,
        "floating_network": _str_or_null,
        "ssh_security_group": _str_or_null,
        "canary_label": _str_or_null,
        "canary_every_hours": {"type": ["integer", "null"]},
        "canary": {**CANARY, "type": ["object", "null"], "description": "the last canary boot, or the one running"},
        "boot_timeout_seconds": nullable(PROVIDER_FIELDS["boot_timeout_seconds"]),
        "rate_limit_per_second": nullable(PROVIDER_FIELDS["rate_limit_per_second"]),
        "problems": {
            "type": "array",
            "items": {"type": "string"},
            "description": "what the last check found wrong in the labels' settings for this account",
        },
        "project_name": _str_or_null,
        "project_id": _str_or_null,
        "auth_type": {"type": "string", "enum": ["password", "application_credential"]},
        "health": {
            "type": "object",
            "required": [
                "state",
                "checked_at",
                "last_error",
                "last_error_at",
                "consecutive_failures",
                "launch_failures",
                "last_launch_ok_at",
                "retry_at",
            ],
            "properties": {
                "state": {"type": "string", "enum": list(models.HEALTH_STATES)},
                "checked_at": {**_ts, "description": "when a health check last ran (it proves the API answers)"},
                "last_error": _str_or_null,
                "last_error_at": {**_ts, "description": "when last_error happened (a check's, a launch's, a build's)"},
                "consecutive_failures": {"type": "integer"},
                "launch_failures": {
                    "type": "integer",
                    "description": "launches failed for the provider's fault since one last succeeded",
                },
                "last_launch_ok_at": {**_ts, "description": "when a create was last accepted there"},
                "retry_at": _ts,
                "rate_limited_until": {
                    **_ts,
                    "description": "the account answered 429: every call to it waits until then (not a fault)",
                },
                "maintenance": {
                    "type": "boolean",
                    "description": "a maintenance window is on: the provider is treated as down, without a call",
                },
                "maintenance_until": {**_ts, "description": "the end of the window that is on"},
            },
        },
        "capacity": {
            "type": "object",
            "required": ["max_instances", "quota_instances", "in_use", "available", "rooms"],
            "properties": {
                "max_instances": {"type": "integer"},
                "quota_instances": {
                    "type": ["integer", "null"],
                    "description": "the instances of ours the account takes, whichever quota runs out first (the "
                    "smallest room's instances); lowered to in_use by a quota error until the next check; null: "
                    "nothing limited, or never checked",
                },
                "in_use": {"type": "integer"},
                "available": {"type": "integer"},
                "rooms": {
                    "type": "object",
                    "description": "each limited resource the last check read (instances, cores, ram_mb, and with "
                    "floating_ip auto floating_ips and ports): a resource left out is unlimited or unread",
                    "propertyNames": {"enum": list(models.QUOTA_RESOURCES)},
                    "additionalProperties": QUOTA_ROOM,
                },
            },
        },
        "launch_times": {
            "type": "object",
            "description": "measured from the last launches that came up here: boot_seconds from the claim to "
            "ACTIVE, ready_seconds from the request to ACTIVE (waiting included); null until one was measured",
            "required": ["samples", "boot_seconds", "ready_seconds"],
            "properties": {
                "samples": {"type": "integer"},
                "boot_seconds": _PERCENTILES,
                "ready_seconds": _PERCENTILES,
            },
        },
        "created_at": _ts,
        "updated_at": _ts,
    },
}
PROVIDER_LIST = _list_of("Provider")


def _rooms(provider: models.Provider) -> dict[str, dict]:
    """The rooms the last check found (quota.py), by resource."""
    stored = provider.quota_rooms.as_dict() if provider.quota_rooms is not None else {}
    return {name: {key: int(value) for key, value in room.items()} for name, room in stored.items()}


def provider_view(provider: models.Provider, *, admin: bool) -> dict:
    now = timeutil.now()
    on = maintenance.current(provider, now)
    view = {
        "name": provider.name,
        "auth_url": provider.auth_url,
        "region": provider.region,
        "project_name": provider.project_name,
        "project_id": provider.project_id,
        "user_domain_name": provider.user_domain_name,
        "project_domain_name": provider.project_domain_name,
        "auth_type": provider.auth_type,
        "interface": provider.interface,
        "verify_tls": provider.verify_tls,
        "max_instances": int(provider.max_instances),
        "priority": int(provider.priority),
        "enabled": provider.enabled,
        "floating_ip": provider.floating_ip,
        "floating_network": provider.floating_network,
        "ssh_security_group": provider.ssh_security_group,
        "address_family": provider.address_family,
        "boot_timeout_seconds": None if provider.boot_timeout_seconds is None else int(provider.boot_timeout_seconds),
        "multipart_user_data": provider.multipart_user_data,
        "rate_limit_per_second": None
        if provider.rate_limit_per_second is None
        else float(provider.rate_limit_per_second),
        "max_concurrent_creates": int(provider.max_concurrent_creates),
        "problems": list(provider.setup_problems or []),
        "canary_label": provider.canary_label,
        "canary_every_hours": None if provider.canary_every_hours is None else int(provider.canary_every_hours),
        "canary": canary_view(canary.of(provider)),
        "labels": provider.labels.as_dict() if hasattr(provider.labels, "as_dict") else dict(provider.labels),
        "maintenance": [w.as_dict() for w in maintenance.windows(provider, now)],
        "health": {
            "state": provider.health_state,
            "checked_at": provider.checked_at,
            "last_error": provider.last_error,
            "last_error_at": provider.last_error_at,
            "consecutive_failures": int(provider.consecutive_failures),
            "launch_failures": int(provider.launch_failures or 0),
            "last_launch_ok_at": provider.last_launch_ok_at,
            "retry_at": provider.retry_at,
            "rate_limited_until": None
            if provider.rate_limited_until is None
            else timeutil.iso(datetime.fromtimestamp(math.ceil(provider.rate_limited_until), UTC)),
            "maintenance": on is not None,
            "maintenance_until": None if on is None else timeutil.iso(on.end),
        },
        "capacity": {
            "max_instances": int(provider.max_instances),
            "quota_instances": None if provider.quota_instances is None else int(provider.quota_instances),
            "in_use": int(provider.in_use),
            "available": provider.free,
            "rooms": _rooms(provider),
        },
        "launch_times": eta.metrics(list(provider.boot_samples or []), list(provider.ready_samples or [])),
        "created_at": provider.created_at,
        "updated_at": provider.updated_at,
    }
    if provider.auth_type == "password":
        view["username"] = provider.username
    else:
        view["application_credential_id"] = provider.application_credential_id
    if not admin:
        view = {key: view[key] for key in USER_PROVIDER_FIELDS}
    return view


INSTANCE = {
    "type": "object",
    "required": ["id", "request_id", "owner", "name", "label", "state", "provider", "server_id", "addresses"],
    "properties": {
        "id": {"type": "string"},
        "request_id": {"type": "string"},
        "owner": {"type": "string"},
        "name": {"type": "string"},
        "label": {"type": "string"},
        "state": {"type": "string", "enum": list(models.STATES)},
        "provider": _str_or_null,
        "server_id": _str_or_null,
        "addresses": {
            "type": "object",
            "properties": {
                "ipv4": {"type": "array", "items": {"type": "string"}},
                "ipv6": {"type": "array", "items": {"type": "string"}},
            },
        },
        "access_ip": {
            **_str_or_null,
            "description": "the address to SSH to: floating first, then public; its provider's address_family first",
        },
        "host_keys": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the server's SSH host keys (type base64), read from its console once sshd answered",
        },
        "ips": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["addr", "version", "type", "network"],
                "properties": {
                    "addr": {"type": "string"},
                    "version": {"type": "integer", "enum": [4, 6]},
                    "type": {"type": "string", "enum": [addresses.FIXED, addresses.FLOATING]},
                    "network": {"type": "string"},
                },
            },
        },
        "attempts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "provider": {"type": "string"},
                    "error": {"type": "string", "enum": list(faults.ERROR_CLASSES)},
                    "message": {"type": "string"},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
        },
        "failure_reason": _str_or_null,
        "waiting": {
            "type": ["object", "null"],
            "description": "a PENDING instance that found no provider: why, and when it is expected ready "
            "(null: no slot frees up for it before it expires, or not estimated yet)",
            "required": ["reason", "eta"],
            "properties": {
                "reason": {"type": "string", "enum": list(placement.WAITING_REASONS)},
                "eta": _ts,
            },
        },
        "pooled_at": {
            **_ts,
            "description": "when it was taken from its label's warm pool, already booted (null: launched for it)",
        },
        "created_at": _ts,
        "active_at": _ts,
        "expires_at": _ts,
        "deleted_at": _ts,
    },
}
INSTANCE_LIST = _list_of("Instance")


def instance_view(instance: models.Instance) -> dict:
    known = instance.addresses.as_dict() if hasattr(instance.addresses, "as_dict") else dict(instance.addresses)
    return {
        "id": instance.id,
        "request_id": instance.request_id,
        "owner": instance.owner,
        "name": instance.name,
        "label": instance.label,
        "state": instance.state,
        "provider": instance.provider,
        "server_id": instance.server_id,
        "addresses": {"ipv4": list(known.get("ipv4", [])), "ipv6": list(known.get("ipv6", []))},
        "access_ip": instance.access_ip,
        "host_keys": list(instance.host_keys or []),
        "ips": [
            {"addr": a.addr, "version": int(a.version), "type": a.type, "network": a.network}
            for a in instance.ips or []
        ],
        "attempts": [
            {"provider": a.provider, "error": a.error, "message": a.message, "at": a.at} for a in instance.attempts
        ],
        "failure_reason": instance.failure_reason,
        "waiting": waiting_view(instance),
        "pooled_at": instance.pooled_at,
        "created_at": instance.created_at,
        "active_at": instance.active_at,
        "expires_at": instance.expires_at,
        "deleted_at": instance.deleted_at,
    }


def waiting_view(instance: models.Instance) -> dict | None:
    if instance.state != models.PENDING or not instance.waiting_reason:
        return None
    return {"reason": instance.waiting_reason, "eta": instance.waiting_eta}


def request_waiting(instances: list[models.Instance]) -> dict | None:
    """What a request's waiting instances wait for, and when the whole request is expected ready:
    the latest of their ETAs (null while one of them has none)."""
    waiting = [w for w in map(waiting_view, instances) if w is not None]
    if not waiting:
        return None
    reasons: dict[str, int] = {}
    for w in waiting:
        reasons[w["reason"]] = reasons.get(w["reason"], 0) + 1
    etas = [w["eta"] for w in waiting]
    return {"count": len(waiting), "reasons": reasons, "ready_eta": None if None in etas else max(etas)}


# A request's summary state, derived from its instances' states (never stored).
REQUEST_PENDING, REQUEST_PARTIAL, REQUEST_READY = "pending", "partial", "ready"
REQUEST_FAILED, REQUEST_DELETING, REQUEST_DELETED = "failed", "deleting", "deleted"
REQUEST_SCHEDULED = "scheduled"  # start_at ahead, not launched yet: no instance written
REQUEST_STATES = (
    REQUEST_SCHEDULED,
    REQUEST_PENDING,
    REQUEST_PARTIAL,
    REQUEST_READY,
    REQUEST_FAILED,
    REQUEST_DELETING,
    REQUEST_DELETED,
)

REQUEST = {
    "type": "object",
    "required": ["id", "owner", "label", "count", "state", "counts", "instances"],
    "properties": {
        "id": {"type": "string"},
        "owner": {"type": "string"},
        "label": {"type": "string"},
        "count": {"type": "integer"},
        "lifetime_minutes": {"type": "integer"},
        "name_prefix": {"type": "string"},
        "created_at": _ts,
        "expires_at": _ts,
        "state": {"type": "string", "enum": list(REQUEST_STATES)},
        "counts": {"type": "object", "properties": {s: {"type": "integer"} for s in models.STATES}},
        "waiting": {
            "type": ["object", "null"],
            "description": "its instances that found no provider: how many, how many for each reason, and "
            "ready_eta, when the whole request is expected ready (null while one of them has no ETA)",
            "required": ["count", "reasons", "ready_eta"],
            "properties": {
                "count": {"type": "integer"},
                "reasons": {"type": "object", "additionalProperties": {"type": "integer"}},
                "ready_eta": _ts,
            },
        },
        "instances": {"type": "array", "items": ref("Instance")},
        "start_at": {**_ts, "description": "when a scheduled request's life starts (null: at once)"},
        "launch_at": {
            **_ts,
            "description": "when its launch is expected to start (start_at less the lead), or started",
        },
        "admission": {
            "type": ["object", "null"],
            "description": "a scheduled request's forecast at creation: expected, or at_risk with the reason "
            "(room for `capacity` of the `needed` at the tightest point of its life); null when not scheduled",
            "required": ["status", "reason", "capacity", "needed"],
            "properties": {
                "status": {"type": "string", "enum": ["expected", "at_risk"]},
                "reason": {"type": "string"},
                "capacity": {"type": "integer"},
                "needed": {"type": "integer"},
            },
        },
        "callback_url": _str_or_null,
        "callbacks": {
            "type": "array",
            "description": "each event raised for callback_url and its delivery, oldest first",
            "items": {
                "type": "object",
                "required": ["id", "type", "state", "tries"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string", "enum": ["ready", "failed", "expiring"]},
                    "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    "tries": {"type": "integer"},
                    "created_at": _ts,
                    "next_try_at": _ts,
                    "delivered_at": _ts,
                    "last_error": _str_or_null,
                },
            },
        },
    },
}
_CALLBACK_VIEW_FIELDS = ("id", "type", "state", "tries", "created_at", "next_try_at", "delivered_at", "last_error")
REQUEST_LIST = _list_of("Request")
EXTENDED = {
    **REQUEST,
    "properties": {
        **REQUEST["properties"],
        "warnings": {
            "type": "array",
            "description": "instances the extend carries into a maintenance window of their provider (the "
            "extend stands: nothing of ours stops them then, the provider may)",
            "items": {
                "type": "object",
                "required": ["instance_id", "provider", "start", "end", "note", "message"],
                "properties": {
                    "instance_id": {"type": "string"},
                    "provider": {"type": "string"},
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                    "note": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def extended_view(request: models.Request, instances: list[models.Instance], warnings: list[dict]) -> dict:
    return {**request_view(request, instances), "warnings": warnings}


def count_states(instances: list[models.Instance]) -> dict[str, int]:
    counts = dict.fromkeys(models.STATES, 0)
    for instance in instances:
        counts[instance.state] += 1
    return counts


def request_state(count: int, counts: dict[str, int], delete_requested: bool) -> str:
    on_the_way = sum(counts[s] for s in models.ON_THE_WAY)
    if counts[models.DELETING]:
        return REQUEST_DELETING
    if on_the_way:
        return REQUEST_PARTIAL if counts[models.ACTIVE] else REQUEST_PENDING
    if counts[models.ACTIVE] == count:
        return REQUEST_READY
    if counts[models.FAILED] and not delete_requested:
        return REQUEST_FAILED
    if counts[models.ACTIVE]:
        return REQUEST_PARTIAL
    return REQUEST_DELETED


def request_view(request: models.Request, instances: list[models.Instance]) -> dict:
    counts = count_states(instances)
    count = int(request.count)
    return {
        "id": request.id,
        "owner": request.owner,
        "label": request.label,
        "count": count,
        "lifetime_minutes": int(request.lifetime_minutes),
        "name_prefix": request.name_prefix,
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "state": REQUEST_SCHEDULED
        if request.schedule_queue is not None and not instances
        else request_state(count, counts, request.delete_requested),
        "counts": counts,
        "waiting": request_waiting(instances),
        "instances": [instance_view(i) for i in instances],
        "start_at": request.start_at,
        "launch_at": request.launched_at or request.launch_at,
        "admission": admission_view(request),
        "callback_url": request.callback_url,
        "callbacks": [
            {name: event.get(name) for name in _CALLBACK_VIEW_FIELDS}
            for event in sorted(callback_events(request).values(), key=lambda e: (e["created_at"], e["id"]))
        ],
    }


def admission_view(request: models.Request) -> dict | None:
    if request.admission is None:
        return None
    found = request.admission.as_dict()
    return {
        "status": found["status"],
        "reason": found["reason"],
        "capacity": int(found["capacity"]),
        "needed": int(found["needed"]),
    }


def callback_events(request: models.Request) -> dict[str, dict]:
    if request.callbacks is None:
        return {}
    return {
        eid: {k: (int(v) if k == "tries" else v) for k, v in dict(event).items()}
        for eid, event in request.callbacks.as_dict().items()
    }


KEY = {
    "type": "object",
    "required": ["id", "name", "role"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "role": {"type": "string", "enum": list(auth.ROLES)},
        "created_at": _ts,
        "key": {"type": "string", "description": "the key itself, shown only in the answer to POST /keys"},
        "callback_secret": {
            "type": "string",
            "description": "signs the callbacks of this key's requests: in the answer to POST /keys and to GET /me",
        },
    },
}
KEY_LIST = _list_of("Key")


def key_view(key: models.ApiKey, secret: str | None = None, callback_secret: str | None = None) -> dict:
    view = {"id": key.id, "name": key.name, "role": key.role, "created_at": key.created_at}
    if secret is not None:
        view["key"] = secret
    if callback_secret is not None:
        view["callback_secret"] = callback_secret
    return view


def caller_view(caller: auth.Caller, callback_secret: str | None = None) -> dict:
    """The key making the call, in the shape of a key (without its created_at), with the secret
    that signs its requests' callbacks (only this key's holder sees it)."""
    view = {"id": caller.key_id, "name": caller.name, "role": caller.role}
    if callback_secret is not None:
        view["callback_secret"] = callback_secret
    return view


POOL = {
    "type": "object",
    "required": ["label", "min_ready", "target", "counts", "schedule", "time_zone", "max_idle_minutes"],
    "properties": {
        "label": {"type": "string"},
        "min_ready": {"type": "integer"},
        "schedule": {"type": "array", "items": _POOL_WINDOW},
        "time_zone": {"type": "string"},
        "max_idle_minutes": {"type": "integer"},
        "ssh_public_key": _str_or_null,
        "target": {"type": "integer", "description": "instances it keeps ready now (its schedule applied)"},
        "counts": {
            "type": "object",
            "description": "its instances now: ready (ACTIVE), booting, pending",
            "required": ["ready", "booting", "pending"],
            "properties": {k: {"type": "integer"} for k in ("ready", "booting", "pending")},
        },
        "created_at": _ts,
        "updated_at": _ts,
    },
}
POOL_LIST = _list_of("Pool")


def pool_view(pool: models.Pool) -> dict:
    return {
        "label": pool.label,
        "min_ready": int(pool.min_ready),
        "schedule": [
            {"days": list(w["days"]), "from": w["from"], "to": w["to"], "min_ready": int(w["min_ready"])}
            for w in (dict(x.as_dict() if hasattr(x, "as_dict") else x) for x in pool.schedule or [])
        ],
        "time_zone": pool.time_zone,
        "max_idle_minutes": int(pool.max_idle_minutes),
        "ssh_public_key": pool.ssh_public_key,
        "target": pools.pool_target(pool, timeutil.now()),
        "counts": pools.counts(pool.label),
        "created_at": pool.created_at,
        "updated_at": pool.updated_at,
    }


# Every schema with a name: what `$ref` points to, and `/openapi.json`'s components.
NAMED: dict[str, dict] = {
    "Error": ERROR,
    "Health": HEALTH,
    "ProviderCreate": PROVIDER_CREATE,
    "ProviderPatch": PROVIDER_PATCH,
    "Provider": PROVIDER,
    "ProviderList": PROVIDER_LIST,
    "CheckRequest": CHECK_REQUEST,
    "RequestCreate": REQUEST_CREATE,
    "Extend": EXTEND,
    "Extended": EXTENDED,
    "Instance": INSTANCE,
    "InstanceList": INSTANCE_LIST,
    "Request": REQUEST,
    "RequestList": REQUEST_LIST,
    "KeyCreate": KEY_CREATE,
    "Key": KEY,
    "KeyList": KEY_LIST,
    "PoolPut": POOL_PUT,
    "Pool": POOL,
    "PoolList": POOL_LIST,
}

VALIDATOR = Validator(
    NAMED,
    formats={
        "uri": _validate_http_url,
        "openssh-public-key": check_ssh_public_key,
        "date-time": _check_date_time,
        "iana-time-zone": pools.check_time_zone,
    },
)
validate = VALIDATOR.validate


# --- query parameters (checked where they are read: pages and fleet, which name the parameter) --

_filter = {"type": "string", "minLength": 1}
LIST_QUERY = (
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": pages.MAX_LIMIT, "default": pages.DEFAULT_LIMIT},
    },
    {
        "name": "next",
        "in": "query",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        "description": "the opaque cursor `next` of the previous page (any other value is a 400)",
    },
)
OWNER_FILTER = ({"name": "owner", "in": "query", "schema": _filter, "description": "admin only"},)
INSTANCE_FILTERS = (
    {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(models.STATES)}},
    {"name": "provider", "in": "query", "schema": _filter},
    {"name": "request_id", "in": "query", "schema": _filter},
    {"name": "label", "in": "query", "schema": _filter},
)
