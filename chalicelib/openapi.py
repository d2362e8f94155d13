"""`/openapi.json`: built from the routes' own declarations and the very schemas that validate bodies.

Nothing here is said twice: the routes come from `routes.Routes.declared`, the schemas from
`schemas.NAMED`; this module only arranges them as OpenAPI 3.1 wants them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chalicelib import auth, schemas
from chalicelib.routes import PUBLIC, Route

# What any route of a role may answer; a route declares what else it may (the fuzz test finds any left out).
_ERRORS_BY_ROLE = {PUBLIC: (), auth.USER: (400, 401, 404), auth.ADMIN: (400, 401, 403, 404)}
_SCHEMA_NAMES = {id(schema): name for name, schema in schemas.NAMED.items()}


def _schema(schema: dict) -> dict:
    """A named schema by reference, any other inline."""
    name = _SCHEMA_NAMES.get(id(schema))
    return schemas.ref(name) if name else schema


def _operation(route: Route) -> dict:
    success: dict[str, Any] = {"description": route.summary}
    if route.answer is not None and route.status != 204:
        success["content"] = {media: {"schema": _schema(route.answer)} for media in route.media}
    responses: dict[str, Any] = {str(status): success for status in (route.status, *route.also)}
    codes = set(_ERRORS_BY_ROLE[route.role]) | route.errors
    if route.body is not None:
        codes |= {400, 413}
    error = {"application/json": {"schema": _schema(schemas.NAMED["Error"])}}
    for code in sorted(codes):
        responses[str(code)] = {"description": "error", "content": error}
    operation: dict[str, Any] = {"summary": route.summary, "responses": responses}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in _path_params(route)
    ] + list(route.query)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        content = {"application/json": {"schema": _schema(route.body)}}
        operation["requestBody"] = {"required": route.body_required, "content": content}
    if route.role == PUBLIC:
        operation["security"] = []
    else:
        operation["security"] = [{"apiKey": []}]
        operation["x-role"] = route.role
    return operation


def _path_params(route: Route) -> list[str]:
    return [part[1:-1] for part in route.path.split("/") if part.startswith("{")]


def document(routes: Iterable[Route]) -> dict:
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OpenMultiStack",
            "version": "1.0.0",
            "description": "Many short-lived OpenStack instances across many provider accounts.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.NAMED,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
