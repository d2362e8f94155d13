"""Shared Nova plumbing: the compute router, error shapes, microversion negotiation, paging.

Nova's resource modules (sim.nova_flavors, sim.nova) register their routes on ``router``
here, so how Nova talks (faults, versions, links) changes in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from sim.state import Provider
from sim.web import Request, Response, Router, token_rejected

router = Router()

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 96)
MAX_LIMIT = 1000  # Nova's [api] max_limit default
MAX_METADATA_ITEMS = 128
FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def fmt_version(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def error(status: int, message: str) -> Response:
    if status == 401:
        # keystonemiddleware, not Nova, answers unauthenticated calls.
        return token_rejected()
    return Response(status, {FAULT_NAMES.get(status, "computeFault"): {"code": status, "message": message}})


def invalid_input(field: str, value: Any, reason: str) -> Response:
    return error(400, f"Invalid input for field/attribute {field}. Value: {value}. {reason}")


class VersionError(Exception):
    pass


def requested_version(req: Request) -> tuple[int, int]:
    """The microversion from OpenStack-API-Version (or the legacy Nova header); 2.1 if absent."""
    raw = None
    header = req.header("OpenStack-API-Version")
    if header:
        parts = header.split()
        if len(parts) == 2 and parts[0].lower() == "compute":
            raw = parts[1]
    raw = raw or req.header("X-OpenStack-Nova-API-Version")
    if not raw:
        return MIN_VERSION
    if raw.lower() == "latest":
        return MAX_VERSION
    match = re.fullmatch(r"(\d+)\.(\d+)", raw.strip())
    if not match:
        raise VersionError(f"Invalid API version request string {raw!r}")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise VersionError(
            f"Version {raw} is not supported by the API. "
            f"Minimum is {fmt_version(MIN_VERSION)} and maximum is {fmt_version(MAX_VERSION)}."
        )
    return version


def versioned(handler: Any) -> Any:
    """Negotiate the microversion, pass it to the handler and echo it back like Nova does."""

    def wrapper(provider: Provider, req: Request, *args: str) -> Response:
        try:
            mv = requested_version(req)
        except VersionError as exc:
            return error(406, str(exc))
        resp = handler(provider, req, mv, *args)
        resp.headers.update(
            {
                "OpenStack-API-Version": f"compute {fmt_version(mv)}",
                "X-OpenStack-Nova-API-Version": fmt_version(mv),
                "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
            }
        )
        return resp

    return wrapper


def links(req: Request, collection: str, item_id: str) -> list[dict[str, str]]:
    base = f"{req.provider_url}/compute"
    return [
        {"rel": "self", "href": f"{base}/v2.1/{collection}/{item_id}"},
        {"rel": "bookmark", "href": f"{base}/{collection}/{item_id}"},
    ]


def paginate(
    req: Request, items: list[Any], key: str, collection_path: str, id_of: Any
) -> tuple[list[Any], list[dict[str, str]] | Response]:
    """Apply Nova's limit/marker paging; returns the page and its ``*_links`` (or an error)."""
    limit_raw, marker = req.arg("limit"), req.arg("marker")
    limit = MAX_LIMIT
    if limit_raw is not None:
        try:
            limit = int(limit_raw)
        except ValueError:
            return [], invalid_input("limit", limit_raw, f"'{limit_raw}' does not match '^[0-9]*$'")
        if limit < 0:
            return [], error(400, "limit param must be positive")
        limit = min(limit, MAX_LIMIT)
    if marker is not None:
        ids = [id_of(i) for i in items]
        if marker not in ids:
            return [], error(400, f"marker [{marker}] not found")
        items = items[ids.index(marker) + 1 :]
    page = items[:limit]
    links: list[dict[str, str]] = []
    if page and len(page) == limit:
        params = {k: v[-1] for k, v in req.query.items() if k not in ("limit", "marker")}
        params.update({"limit": str(limit), "marker": id_of(page[-1])})
        links.append({"rel": "next", "href": f"{req.provider_url}/compute/v2.1/{collection_path}?{urlencode(params)}"})
    return page, links


def listing(
    req: Request, items: list[Any], key: str, detail: bool, id_of: Callable[[Any], str], render: Callable[[Any], Any]
) -> Response:
    """One page of a Nova collection (``/key`` or ``/key/detail``) with its ``key_links``."""
    page, next_links = paginate(req, items, key, f"{key}/detail" if detail else key, id_of)
    if isinstance(next_links, Response):
        return next_links
    body: dict[str, Any] = {key: [render(item) for item in page]}
    if next_links:
        body[f"{key}_links"] = next_links
    return Response(200, body)


def not_found(kind: str, ident: str) -> Response:
    """Nova's 404 for a missing item, e.g. "Instance <id> could not be found."."""
    return error(404, f"{kind} {ident} could not be found.")


# -- discovery -------------------------------------------------------------
def _version_doc(req: Request) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": fmt_version(MAX_VERSION),
        "min_version": fmt_version(MIN_VERSION),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{req.provider_url}/compute/v2.1/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    }


@router.route("GET", "", "discovery")
def versions(provider: Provider, req: Request) -> Response:
    return Response(200, {"versions": [_version_doc(req)]})


@router.route("GET", "/v2.1", "discovery")
def version(provider: Provider, req: Request) -> Response:
    return Response(200, {"version": _version_doc(req)})
