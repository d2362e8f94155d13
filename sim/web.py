"""Framework-neutral request/response types and a tiny path router shared by the API modules.

Keeping these free of http.server lets nova/keystone/glance/neutron be plain functions of
(provider, request) -> response, which is what makes them easy to read and to test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class BadBody(ValueError):
    """The request body is not the JSON the API expects."""


@dataclass
class Request:
    method: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    # e.g. http://127.0.0.1:PORT/p1 -- catalog and links are built from it so they
    # follow whatever host name the client used.
    provider_url: str

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadBody(f"Malformed request body: {exc}") from exc

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[..., Response]


@dataclass
class Match:
    kind: str
    handler: Handler
    args: tuple[str, ...]


class Router:
    """Maps (method, path pattern) to a call kind and a handler; ``{}`` matches one segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], str, Handler]] = []

    def route(self, method: str, pattern: str, kind: str) -> Callable[[Handler], Handler]:
        parts = tuple(p for p in pattern.split("/") if p)

        def register(handler: Handler) -> Handler:
            self._routes.append((method, parts, kind, handler))
            return handler

        return register

    def match(self, method: str, segments: list[str]) -> Match | None:
        # HEAD is answered like GET; the HTTP layer drops the body.
        method = "GET" if method == "HEAD" else method
        for route_method, parts, kind, handler in self._routes:
            if route_method != method or len(parts) != len(segments):
                continue
            args = []
            for part, seg in zip(parts, segments, strict=True):
                if part == "{}":
                    args.append(seg)
                elif part != seg:
                    break
            else:
                return Match(kind, handler, tuple(args))
        return None


@dataclass(frozen=True)
class Service:
    """One OpenStack API mounted at ``/<provider>/<prefix>``.

    ``error`` renders a status and message in that API's own error shape, because
    openstacksdk pulls the message out of each service's native body.
    """

    prefix: str
    router: Router
    error: Callable[[int, str], Response]
    open_kinds: frozenset[str] = frozenset({"discovery"})


def token_rejected() -> Response:
    """keystonemiddleware's 401, which fronts every service alike when X-Auth-Token is bad."""
    body = {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
    return Response(401, body, {"WWW-Authenticate": 'Keystone uri="/identity"'})
