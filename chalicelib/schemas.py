"""The one place that knows the API's JSON: body schemas, their validation, response shapes.

Body schemas are plain JSON Schema; `validate` enforces exactly what `/openapi.json` shows, so
the contract a client reads is the one the server applies. The rules that need more than types,
ranges and patterns are checked after, in this module, with messages naming the field: the
choice of one credential (documented as the schema's `oneOf`, which `validate` leaves to
`check_provider`), a parseable SSH key (documented as format `openssh-public-key`), and a URL
that is http(s) without credentials (format `uri` plus a pattern).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any
from urllib.parse import urlsplit

from chalicelib import models
from chalicelib.errors import invalid

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
        "image": _text,
        "flavor": _text,
        "network": _text,
        "security_groups": {"type": "array", "maxItems": 20, "items": _text},
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
    "labels": {
        "type": "object",
        "maxProperties": 100,
        "propertyNames": {"pattern": LABEL_PATTERN},
        "additionalProperties": LABEL_MAPPING,
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
    "labels": {},
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


PROVIDER_CREATE = body_schema(
    PROVIDER_FIELDS,
    required=("name", "auth_url"),
    # Exactly one kind of credential (enforced by check_provider, which names the field).
    oneOf=[
        _all_of(
            _given(*PASSWORD_FIELDS),
            _not_given(*APP_CREDENTIAL_FIELDS),
            {"anyOf": [_given("project_name"), _given("project_id")]},
        ),
        _all_of(_given(*APP_CREDENTIAL_FIELDS), _not_given(*PASSWORD_FIELDS)),
    ],
)
# The name is the provider's key: it is in the path, and cannot be changed.
# The URL has no default to go back to, so a PATCH cannot null it.
PROVIDER_PATCH = body_schema(
    {k: v for k, v in PROVIDER_FIELDS.items() if k != "name"}, required=(), never_null=("auth_url",)
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
    },
    required=("label", "count"),
)
EXTEND = body_schema({"minutes": {"type": "integer", "minimum": 1, "maximum": 1440}}, required=("minutes",))
KEY_CREATE = body_schema(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[^\x00-\x1f]+$"},
        "role": {"type": "string", "enum": ["user", "admin"]},
    },
    required=("name", "role"),
)

_TYPE_NAMES = {
    "null": "null",
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
}


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    raise ValueError(f"schema type {kind} is not supported")


def validate(value: Any, schema: dict, field: str = "") -> None:
    """Raise a 400 naming the first field that breaks `schema` (the subset of JSON Schema we use)."""
    name = field or "body"
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if value is None and "null" in kinds:
        return
    if kinds and not any(_is_type(value, k) for k in kinds):
        raise invalid(f"{name} must be {_TYPE_NAMES[kinds[0]]}", field or None)
    kind = next((k for k in kinds if _is_type(value, k)), None)
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        raise invalid(f"{name} must be one of {allowed}", field or None)
    if isinstance(value, str):
        _validate_string(value, schema, name, field)
    if kind == "integer" and ("minimum" in schema or "maximum" in schema):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise invalid(f"{name} must be between {low} and {high}", field)
    if kind == "array":
        if len(value) > schema.get("maxItems", len(value)):
            raise invalid(f"{name} may have at most {schema['maxItems']} items", field)
        for index, item in enumerate(value):
            validate(item, schema["items"], f"{field}[{index}]")
    if kind == "object":
        _validate_object(value, schema, field)


def _validate_string(value: str, schema: dict, name: str, field: str) -> None:
    if len(value) < schema.get("minLength", 0):
        raise invalid(f"{name} must not be empty", field or None)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise invalid(f"{name} must be at most {schema['maxLength']} characters", field or None)
    # The format first: its checks say what is wrong in words; the pattern is the documented form.
    if schema.get("format") == "uri":
        _validate_http_url(value, field)
    if schema.get("format") == "openssh-public-key":
        check_ssh_public_key(value, field)
    if "pattern" in schema and not re.search(_ecma(schema["pattern"]), value):
        raise invalid(f"{name} must match {schema['pattern']}", field or None)


def _ecma(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262: a final `$` is the very end, where Python's `$` would
    also match before a final newline ("name\\n" must not pass `^[a-z]+$`)."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def _validate_object(value: dict, schema: dict, field: str) -> None:
    prefix = f"{field}." if field else ""
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    if len(value) > schema.get("maxProperties", len(value)):
        raise invalid(f"{field or 'body'} may have at most {schema['maxProperties']} entries", field)
    for key in schema.get("required", []):
        if key not in value or value[key] is None:
            raise invalid(f"{prefix}{key} is required", f"{prefix}{key}")
    for key, item in value.items():
        if key in properties:
            validate(item, properties[key], f"{prefix}{key}")
        elif extra is False:
            raise invalid(f"unknown field {prefix}{key}", f"{prefix}{key}")
        else:
            names = schema.get("propertyNames")
            if names and not re.search(names["pattern"], key):
                raise invalid(f"{prefix}{key} is not a valid name: it must match {names['pattern']}", f"{prefix}{key}")
            if isinstance(extra, dict):
                validate(item, extra, f"{prefix}{key}")


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


# --- provider rules beyond the schema -------------------------------------------------------


def check_provider(merged: dict) -> None:
    """Rules on a whole provider (after defaults and, for PATCH, after merging the change)."""
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


# --- request rules beyond the schema --------------------------------------------------------

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


def check_request(body: dict) -> None:
    if body.get("user_data") is not None and len(body["user_data"].encode()) > USER_DATA_MAX_BYTES:
        raise invalid("user_data must be at most 16 KiB", "user_data")


# --- responses -------------------------------------------------------------------------------

USER_PROVIDER_FIELDS = ("name", "region", "enabled", "labels", "health", "capacity")


def provider_view(provider: models.Provider, *, admin: bool) -> dict:
    cap = provider.cap
    in_use = int(provider.in_use)
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
        "labels": provider.labels.as_dict() if hasattr(provider.labels, "as_dict") else dict(provider.labels),
        "health": {
            "state": provider.health_state,
            "checked_at": provider.checked_at,
            "last_error": provider.last_error,
            "consecutive_failures": int(provider.consecutive_failures),
            "retry_at": provider.retry_at,
        },
        "capacity": {
            "max_instances": int(provider.max_instances),
            "quota_instances": None if provider.quota_instances is None else int(provider.quota_instances),
            "in_use": in_use,
            "available": max(0, cap - in_use),
        },
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


def instance_view(instance: models.Instance) -> dict:
    addresses = instance.addresses.as_dict() if hasattr(instance.addresses, "as_dict") else dict(instance.addresses)
    return {
        "id": instance.id,
        "request_id": instance.request_id,
        "owner": instance.owner,
        "name": instance.name,
        "label": instance.label,
        "state": instance.state,
        "provider": instance.provider,
        "server_id": instance.server_id,
        "addresses": {"ipv4": list(addresses.get("ipv4", [])), "ipv6": list(addresses.get("ipv6", []))},
        "attempts": [
            {"provider": a.provider, "error": a.error, "message": a.message, "at": a.at} for a in instance.attempts
        ],
        "failure_reason": instance.failure_reason,
        "created_at": instance.created_at,
        "active_at": instance.active_at,
        "expires_at": instance.expires_at,
        "deleted_at": instance.deleted_at,
    }


def count_states(instances: list[models.Instance]) -> dict[str, int]:
    counts = dict.fromkeys(models.STATES, 0)
    for instance in instances:
        counts[instance.state] += 1
    return counts


def request_state(count: int, counts: dict[str, int], delete_requested: bool) -> str:
    """The request's summary state, derived from its instances' states (never stored)."""
    on_the_way = sum(counts[s] for s in models.ON_THE_WAY)
    if counts[models.DELETING]:
        return "deleting"
    if on_the_way:
        return "partial" if counts[models.ACTIVE] else "pending"
    if counts[models.ACTIVE] == count:
        return "ready"
    if counts[models.FAILED] and not delete_requested:
        return "failed"
    if counts[models.ACTIVE]:
        return "partial"
    return "deleted"


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
        "state": request_state(count, counts, request.delete_requested),
        "counts": counts,
        "instances": [instance_view(i) for i in instances],
    }


def key_view(key: models.ApiKey, secret: str | None = None) -> dict:
    view = {"id": key.id, "name": key.name, "role": key.role, "created_at": key.created_at}
    if secret is not None:
        view["key"] = secret
    return view
