"""Route declarations: each route's contract said once, where it is registered.

A declaration names the route's method, path, summary, role, body schema, success status, answer
schema, query parameters and the errors it may answer besides its role's. The same declaration
registers the route with Chalice, authenticates and authorises the caller by its role, validates
the body against its schema, and is what `/openapi.json` documents, so none can drift from another.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalice import Chalice, Response

from chalicelib import auth, schemas
from chalicelib.http import json_body, reaching_middleware, respond

PUBLIC = "public"  # no key needed
ROLES = (PUBLIC, *auth.ROLES)
JSON = ("application/json",)
# Methods whose body is read as JSON whatever the Content-Type says (curl -d sends a form type).
_BODY_METHODS = ("POST", "PATCH", "PUT")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    role: str
    body: dict | None = None
    status: int = 200
    answer: dict | None = None
    media: tuple[str, ...] = JSON
    query: tuple[dict, ...] = ()
    errors: frozenset[int] = field(default_factory=frozenset)
    body_required: bool = True
    also: tuple[int, ...] = ()  # other success statuses, with the same answer


@dataclass(frozen=True)
class Call:
    """What a route's handler gets besides its path parameters: who called, with what."""

    caller: auth.Caller | None
    body: dict | None
    params: Mapping[str, str]


class Routes:
    """The app's routes, declared through `route` and kept in order for `/openapi.json`."""

    def __init__(self, app: Chalice) -> None:
        self.app = app
        self.declared: dict[tuple[str, str], Route] = {}

    def route(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        role: str,
        body: dict | None = None,
        status: int = 200,
        answer: dict | None = None,
        media: tuple[str, ...] = JSON,
        query: tuple[dict, ...] = (),
        errors: tuple[int, ...] = (),
        body_required: bool = True,
        also: tuple[int, ...] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare and register a route. Its handler takes a `Call` and the path parameters, and
        returns the answer's JSON (sent with `status`; None for no body) or a whole Response
        (with `status` or one of `also`). A body that is not `body_required` may be left out."""
        if role not in ROLES:
            raise ValueError(f"{method} {path}: role {role!r} is not one of {ROLES}")
        declared = Route(
            method,
            path,
            summary,
            role,
            body,
            status,
            answer,
            media,
            tuple(query),
            frozenset(errors),
            body_required,
            also,
        )

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            # Chalice would answer a view's exception with its own 500 before the middleware saw it.
            @reaching_middleware
            @functools.wraps(handler)
            def view(**path_params: str) -> Response:
                request = self.app.current_request
                caller = None if role == PUBLIC else auth.authenticate(request.headers.get("authorization"))
                if role == auth.ADMIN:
                    auth.require_admin(caller)
                payload = None
                if body is not None:
                    payload = json_body(request) if body_required or (request.raw_body or b"").strip() else {}
                    schemas.validate(payload, body)
                answer = handler(Call(caller, payload, request.query_params or {}), **path_params)
                return answer if isinstance(answer, Response) else respond(answer, status)

            options = {"content_types": ["*/*"]} if method in _BODY_METHODS else {}
            self.app.route(path, methods=[method], **options)(view)
            self.declared[(method, path)] = declared
            return handler

        return register
