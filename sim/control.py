"""The simulator's own control API under ``/_sim``: inspect counters, flip fault modes, seed servers.

This is not an OpenStack API; tests and benchmarks use it to arrange and verify scenarios.
Errors are ``{"error": "<message>"}`` with a 4xx status.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sim.config import ConfigError
from sim.state import Provider, QuotaExceeded, ServerSpec
from sim.web import Request, Response, Router

router = Router()


def error(status: int, message: str) -> Response:
    return Response(status, {"error": message})


def describe(provider: Provider, base_url: str) -> dict[str, Any]:
    """Provider snapshot plus the URLs a client needs to reach it."""
    prefix = f"{base_url}/{provider.name}"
    return {
        **provider.snapshot(),
        "auth_url": f"{prefix}/identity/v3",
        "auth_url_v2": f"{prefix}/identity/v2.0",
    }


def _body(req: Request) -> Any:
    if not req.body.strip():
        return {}
    return req.json()


def _lookup(items: list[dict[str, Any]], ref: Any, label: str) -> dict[str, Any]:
    if ref is None:
        return items[0]
    for item in items:
        if ref in (item["id"], item["name"]):
            return item
    raise ConfigError(f"unknown {label} {ref!r}")


@router.route("GET", "", "control")
@router.route("GET", "/providers", "control")
def list_providers(providers: Mapping[str, Provider], req: Request) -> Response:
    return Response(200, {"providers": [describe(p, req.provider_url) for p in providers.values()]})


@router.route("GET", "/providers/{}", "control")
def show_provider(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    return Response(200, describe(providers[name], req.provider_url))


@router.route("PATCH", "/providers/{}", "control")
def patch_provider(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    providers[name].update_settings(_body(req))
    return Response(200, describe(providers[name], req.provider_url))


@router.route("GET", "/providers/{}/servers", "control")
def list_raw_servers(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    return Response(200, {"servers": [s.snapshot() for s in providers[name].list_servers()]})


@router.route("GET", "/providers/{}/servers/{}/host-keys", "control")
def host_keys(providers: Mapping[str, Provider], req: Request, name: str, server_id: str) -> Response:
    """The public host keys the server's console prints, to compare with what a client learned."""
    server = providers[name].get_server(server_id)
    if server is None:
        return error(404, f"unknown server {server_id!r}")
    return Response(200, {"host_keys": list(server.host_keys)})


@router.route("PATCH", "/providers/{}/servers/{}", "control")
def patch_server(providers: Mapping[str, Provider], req: Request, name: str, server_id: str) -> Response:
    """`{"locked": true}` locks a server as an admin (or a backup) would: its deletes answer 409."""
    body = _body(req)
    if not isinstance(body, dict) or set(body) != {"locked"} or not isinstance(body["locked"], bool):
        raise ConfigError('body must be {"locked": true | false}')
    server = providers[name].lock_server(server_id, body["locked"])
    if server is None:
        return error(404, f"unknown server {server_id!r}")
    return Response(200, server.snapshot())


@router.route("GET", "/providers/{}/floating-ips", "control")
def list_floating_ips(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    return Response(200, {"floating_ips": providers[name].floating_ip_snapshots()})


_IMAGE_VALUE = (str, int, float, bool)


def _image_fields(body: Any, *, adding: bool) -> dict[str, Any]:
    """An image's fields from a control body: `name`, `id` (adding only), `created_at`,
    `os_hidden`, and any property (os_distro, os_version, ...); null removes one (changing only)."""
    if not isinstance(body, dict) or not body:
        raise ConfigError("body must be a non-empty JSON object")
    fields = dict(body)
    if "id" in fields and not adding:
        raise ConfigError("an image's id cannot change")
    if adding and not isinstance(fields.get("name"), str):
        raise ConfigError("a new image needs a string name")
    for key, value in fields.items():
        allowed = _IMAGE_VALUE if adding or key in ("name", "id") else (*_IMAGE_VALUE, type(None))
        if not isinstance(value, allowed) or (key in ("name", "id") and not value):
            raise ConfigError(f"{key} must be a {'non-empty string' if key in ('name', 'id') else 'scalar'}")
    if "os_hidden" in fields and not isinstance(fields["os_hidden"], bool):
        raise ConfigError("os_hidden must be true or false")
    if fields.get("created_at") is not None:
        try:
            datetime.fromisoformat(str(fields["created_at"]).replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"created_at must be an ISO 8601 time, got {fields['created_at']!r}") from None
    return fields


@router.route("GET", "/providers/{}/images", "control")
def list_raw_images(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    """Every image, hidden ones too, with its properties."""
    with providers[name].lock:
        return Response(200, {"images": [dict(i) for i in providers[name].images]})


@router.route("POST", "/providers/{}/images", "control")
def add_image(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    return Response(201, providers[name].add_image(_image_fields(_body(req), adding=True)))


@router.route("PATCH", "/providers/{}/images/{}", "control")
def update_image(providers: Mapping[str, Provider], req: Request, name: str, ref: str) -> Response:
    """Rename (`name`), hide (`os_hidden`) or change properties of an image, by id or unique name."""
    return Response(200, providers[name].update_image(ref, _image_fields(_body(req), adding=False)))


@router.route("DELETE", "/providers/{}/images/{}", "control")
def delete_image(providers: Mapping[str, Provider], req: Request, name: str, ref: str) -> Response:
    providers[name].delete_image(ref)
    return Response(200, {"deleted": ref})


@router.route("POST", "/providers/{}/servers", "control")
def add_servers(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    """Create servers "by someone else": no app metadata, but they count toward the quota."""
    provider = providers[name]
    body = _body(req)
    if not isinstance(body, dict):
        raise ConfigError("body must be a JSON object")
    unknown = set(body) - {"name", "metadata", "count", "image", "flavor", "network"}
    if unknown:
        raise ConfigError(f"unknown fields: {', '.join(sorted(unknown))}")
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"count must be a positive integer, got {count!r}")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ConfigError("metadata must be an object of strings")
    server_name = body.get("name", "external")
    if not isinstance(server_name, str) or not server_name:
        raise ConfigError("name must be a non-empty string")
    spec = ServerSpec(
        name=server_name,
        image_id=_lookup(provider.images, body.get("image"), "image")["id"],
        flavor_id=_lookup(provider.flavors, body.get("flavor"), "flavor")["id"],
        network_ids=[_lookup(provider.networks, body.get("network"), "network")["id"]] if provider.networks else [],
        metadata=metadata,
        min_count=count,
        max_count=count,
    )
    try:
        created = provider.create_servers(spec, origin="control")
    except QuotaExceeded as exc:
        return error(403, str(exc))
    return Response(201, {"servers": [s.snapshot() for s in created]})


@router.route("POST", "/providers/{}/revoke-tokens", "control")
def revoke_tokens(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    """Every token issued so far stops working (as if they expired); the credentials still log in."""
    return Response(200, {"revoked": providers[name].revoke_tokens()})


@router.route("DELETE", "/providers/{}/servers", "control")
def delete_all_servers(providers: Mapping[str, Provider], req: Request, name: str) -> Response:
    provider = providers[name]
    deleted = [s.id for s in provider.list_servers() if provider.delete_server(s.id, forced=True)]
    return Response(200, {"deleted": deleted})


def dispatch(providers: Mapping[str, Provider], req: Request) -> Response:
    """Answer one control request; ``req.segments`` are the path parts after ``/_sim``."""
    found = router.match(req.method, req.segments)
    if found is None:
        return error(404, f"no control route {req.method} /_sim/{'/'.join(req.segments)}")
    if found.args and found.args[0] not in providers:
        return error(404, f"unknown provider {found.args[0]!r}; known: {', '.join(providers)}")
    try:
        return found.handler(providers, req, *found.args)
    except ValueError as exc:  # ConfigError or BadBody: both carry a user-facing message
        return error(400, str(exc))
