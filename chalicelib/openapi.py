"""`/openapi.json`: built from the app's own route table and the very schemas that validate bodies.

Every route must have an entry in ROUTES; a test checks the table against `app.routes`, so a new
route without documentation fails the suite.
"""

from __future__ import annotations

from typing import Any

from chalicelib import models, schemas
from chalicelib.errors import STATUS_BY_CODE

_ts = {"type": ["string", "null"], "format": "date-time"}
_str_or_null = {"type": ["string", "null"]}


def _list_of(ref: str) -> dict:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {"items": {"type": "array", "items": {"$ref": ref}}, "next": _str_or_null},
    }


COMPONENTS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": list(STATUS_BY_CODE)},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            }
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "ProviderCreate": schemas.PROVIDER_CREATE,
    "ProviderPatch": schemas.PROVIDER_PATCH,
    "Provider": {
        "type": "object",
        "required": list(schemas.USER_PROVIDER_FIELDS),
        "properties": {
            **{k: v for k, v in schemas.PROVIDER_FIELDS.items() if k not in schemas.SECRET_FIELDS},
            "region": _str_or_null,
            "project_name": _str_or_null,
            "project_id": _str_or_null,
            "auth_type": {"type": "string", "enum": ["password", "application_credential"]},
            "health": {
                "type": "object",
                "required": ["state", "checked_at", "last_error", "consecutive_failures", "retry_at"],
                "properties": {
                    "state": {"type": "string", "enum": ["unknown", "healthy", "degraded", "down"]},
                    "checked_at": _ts,
                    "last_error": _str_or_null,
                    "consecutive_failures": {"type": "integer"},
                    "retry_at": _ts,
                },
            },
            "capacity": {
                "type": "object",
                "required": ["max_instances", "quota_instances", "in_use", "available"],
                "properties": {
                    "max_instances": {"type": "integer"},
                    "quota_instances": {"type": ["integer", "null"]},
                    "in_use": {"type": "integer"},
                    "available": {"type": "integer"},
                },
            },
            "created_at": _ts,
            "updated_at": _ts,
        },
    },
    "ProviderList": _list_of("#/components/schemas/Provider"),
    "RequestCreate": schemas.REQUEST_CREATE,
    "Extend": schemas.EXTEND,
    "Instance": {
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
            "attempts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "provider": {"type": "string"},
                        "error": {
                            "type": "string",
                            "enum": [
                                "quota",
                                "capacity",
                                "auth",
                                "unavailable",
                                "config",
                                "build_failed",
                                "timeout",
                                "unknown",
                            ],
                        },
                        "message": {"type": "string"},
                        "at": {"type": "string", "format": "date-time"},
                    },
                },
            },
            "failure_reason": _str_or_null,
            "created_at": _ts,
            "active_at": _ts,
            "expires_at": _ts,
            "deleted_at": _ts,
        },
    },
    "InstanceList": _list_of("#/components/schemas/Instance"),
    "Request": {
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
            "state": {"type": "string", "enum": ["pending", "partial", "ready", "failed", "deleting", "deleted"]},
            "counts": {
                "type": "object",
                "properties": {s: {"type": "integer"} for s in models.STATES},
            },
            "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}},
        },
    },
    "RequestList": _list_of("#/components/schemas/Request"),
    "KeyCreate": schemas.KEY_CREATE,
    "Key": {
        "type": "object",
        "required": ["id", "name", "role"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["user", "admin"]},
            "created_at": _ts,
            "key": {"type": "string", "description": "the key itself, shown only in the answer to POST /keys"},
        },
    },
    "KeyList": _list_of("#/components/schemas/Key"),
}

_LIST_PARAMS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
    {
        "name": "next",
        "in": "query",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        "description": "the opaque cursor `next` of the previous page (any other value is a 400)",
    },
]
_filter = {"type": "string", "minLength": 1}
_INSTANCE_FILTERS = [
    {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(models.STATES)}},
    {"name": "provider", "in": "query", "schema": _filter},
    {"name": "request_id", "in": "query", "schema": _filter},
    {"name": "label", "in": "query", "schema": _filter},
]
_OWNER_FILTER = [{"name": "owner", "in": "query", "schema": _filter, "description": "admin only"}]

# (method, path): (summary, role or None for public, request body schema, success status, response schema,
#                  extra query parameters)
ROUTES: dict[tuple[str, str], tuple] = {
    ("GET", "/health"): ("Liveness", None, None, 200, "Health", []),
    ("GET", "/openapi.json"): ("This document", None, None, 200, None, []),
    ("GET", "/"): ("The web dashboard (HTML)", None, None, 200, None, []),
    ("GET", "/static/{name}"): ("The dashboard's script and style sheet", None, None, 200, None, []),
    ("POST", "/providers"): ("Register a provider account", "admin", "ProviderCreate", 201, "Provider", []),
    ("GET", "/providers"): ("List providers", "user", None, 200, "ProviderList", _LIST_PARAMS),
    ("GET", "/providers/{name}"): ("Get a provider", "user", None, 200, "Provider", []),
    ("PATCH", "/providers/{name}"): (
        "Change a provider (credentials too)",
        "admin",
        "ProviderPatch",
        200,
        "Provider",
        [],
    ),
    ("DELETE", "/providers/{name}"): ("Remove a provider without live instances", "admin", None, 204, None, []),
    ("POST", "/providers/{name}/check"): ("Run a health check now", "admin", None, 200, "Provider", []),
    ("POST", "/requests"): ("Request instances", "user", "RequestCreate", 202, "Request", []),
    ("GET", "/requests"): ("List requests", "user", None, 200, "RequestList", _LIST_PARAMS + _OWNER_FILTER),
    ("GET", "/requests/{request_id}"): ("Get a request with its instances", "user", None, 200, "Request", []),
    ("DELETE", "/requests/{request_id}"): ("Delete every instance of a request", "user", None, 202, "Request", []),
    ("POST", "/requests/{request_id}/extend"): ("Extend a request's lifetime", "user", "Extend", 200, "Request", []),
    ("GET", "/instances"): ("List instances", "user", None, 200, "InstanceList", _LIST_PARAMS + _INSTANCE_FILTERS),
    ("GET", "/instances/{instance_id}"): ("Get an instance", "user", None, 200, "Instance", []),
    ("DELETE", "/instances/{instance_id}"): ("Delete an instance", "user", None, 202, "Instance", []),
    ("POST", "/keys"): ("Create an API key (shown once)", "admin", "KeyCreate", 201, "Key", []),
    ("GET", "/keys"): ("List API keys (without the keys)", "admin", None, 200, "KeyList", _LIST_PARAMS),
    ("DELETE", "/keys/{key_id}"): ("Revoke an API key", "admin", None, 204, None, []),
    ("GET", "/me"): ("The key making the call: its id, name and role", "user", None, 200, "Key", []),
}

_ERRORS_BY_ROLE = {None: [], "user": [400, 401, 404], "admin": [400, 401, 403, 404]}
# What one route may answer besides its role's errors (the fuzz test finds any left out).
_MORE_ERRORS = {
    ("GET", "/static/{name}"): {404},
    ("POST", "/providers"): {409},
    ("DELETE", "/providers/{name}"): {409},
    ("POST", "/requests"): {409, 422},
    ("GET", "/requests"): {403},
    ("DELETE", "/requests/{request_id}"): {409},
    ("POST", "/requests/{request_id}/extend"): {409},
    ("DELETE", "/instances/{instance_id}"): {409},
}


def _operation(method: str, path: str) -> dict:
    summary, role, body, status, result, params = ROUTES[(method, path)]
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{result}"}}} if result else None
    if path == "/":
        content = {"text/html": {"schema": {"type": "string"}}}
    if path == "/static/{name}":
        content = {t: {"schema": {"type": "string"}} for t in ("text/javascript", "text/css")}
    success: dict[str, Any] = {"description": summary}
    if content and status != 204:
        success["content"] = content
    responses: dict[str, Any] = {str(status): success}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    codes = set(_ERRORS_BY_ROLE[role]) | _MORE_ERRORS.get((method, path), set())
    if body:
        codes |= {400, 413}
    for code in sorted(codes):
        responses[str(code)] = {"description": "error", "content": error}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in _path_params(path)
    ] + params
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    operation["security"] = [{"apiKey": []}] if role else []
    if role:
        operation["x-role"] = role
    return operation


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def document() -> dict:
    paths: dict[str, dict] = {}
    for method, path in ROUTES:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OpenMultiStack",
            "version": "1.0.0",
            "description": "Many short-lived OpenStack instances across many provider accounts.",
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
