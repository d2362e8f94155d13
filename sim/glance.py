"""Glance (image v2): version discovery plus image list/show, enough for ``find_image``.

Glance answers errors with small HTML pages rather than JSON; that is mirrored because
openstacksdk has to cope with exactly that from real clouds.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

from sim.state import Provider
from sim.web import Request, Response, Router, Service, token_rejected

router = Router()

DEFAULT_LIMIT = 25  # Glance's limit_param_default
MAX_LIMIT = 1000
CREATED = "2024-01-01T00:00:00Z"
TITLES = {400: "400 Bad Request", 404: "404 Not Found", 503: "503 Service Unavailable"}


def error(status: int, message: str) -> Response:
    if status == 401:
        return token_rejected()
    title = TITLES.get(status, f"{status} Error")
    html = (
        f"<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n"
        f"  {message}<br /><br />\n\n\n\n </body>\n</html>"
    )
    return Response(status, html, content_type="text/html; charset=UTF-8")


def _versions(req: Request) -> dict[str, Any]:
    href = f"{req.provider_url}/image/v2/"
    ids = [("v2.16", "CURRENT"), ("v2.15", "SUPPORTED"), ("v2.0", "SUPPORTED")]
    return {
        "versions": [{"id": vid, "status": status, "links": [{"rel": "self", "href": href}]} for vid, status in ids]
    }


@router.route("GET", "", "discovery")
def versions(provider: Provider, req: Request) -> Response:
    return Response(300, _versions(req))


@router.route("GET", "/versions", "discovery")
def versions_alias(provider: Provider, req: Request) -> Response:
    return Response(200, _versions(req))


def image_body(provider: Provider, image: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha512(image["id"].encode()).hexdigest()
    body = {
        "id": image["id"],
        "name": image["name"],
        "status": image["status"],
        "visibility": image.get("visibility", "public"),
        "protected": False,
        "os_hidden": bool(image.get("os_hidden", False)),
        "container_format": image.get("container_format", "bare"),
        "disk_format": image["disk_format"],
        "min_disk": image["min_disk"],
        "min_ram": image["min_ram"],
        "size": image["size"],
        "virtual_size": None,
        "checksum": hashlib.md5(image["id"].encode(), usedforsecurity=False).hexdigest(),
        "os_hash_algo": "sha512",
        "os_hash_value": digest,
        "owner": provider.project_id,
        "created_at": image.get("created_at", CREATED),
        "updated_at": image.get("created_at", CREATED),
        "tags": list(image.get("tags", [])),
        "self": f"/v2/images/{image['id']}",
        "file": f"/v2/images/{image['id']}/file",
        "schema": "/v2/schemas/image",
    }
    # Extra scenario keys (os_distro, ...) are image properties, shown top-level as Glance does.
    for key, value in image.items():
        body.setdefault(key, value)
    return body


@router.route("GET", "/v2/images", "image_list")
def list_images(provider: Provider, req: Request) -> Response:
    with provider.lock:
        images = [dict(i) for i in provider.images]
    # Hidden images are left out of lists unless asked for, as Glance does (still bootable by id).
    hidden = req.arg("os_hidden") == "true"
    images = [i for i in images if bool(i.get("os_hidden", False)) == hidden]
    for key in ("name", "status", "visibility", "disk_format", "container_format"):
        value = req.arg(key)
        if value is not None:
            images = [i for i in images if str(image_body(provider, i)[key]) == value]
    limit_raw = req.arg("limit")
    try:
        limit = min(int(limit_raw), MAX_LIMIT) if limit_raw is not None else DEFAULT_LIMIT
    except ValueError:
        return error(400, "limit param must be an integer")
    marker = req.arg("marker")
    if marker is not None:
        ids = [i["id"] for i in images]
        if marker not in ids:
            return error(400, f"marker {marker} could not be found.")
        images = images[ids.index(marker) + 1 :]
    page = images[:limit]
    body: dict[str, Any] = {
        "images": [image_body(provider, i) for i in page],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }
    if page and len(page) == limit:
        params = {k: v[-1] for k, v in req.query.items() if k not in ("limit", "marker")}
        params.update({"limit": str(limit), "marker": page[-1]["id"]})
        body["next"] = f"/v2/images?{urlencode(params)}"
    return Response(200, body)


@router.route("GET", "/v2/images/{}", "image_get")
def get_image(provider: Provider, req: Request, image_id: str) -> Response:
    image = provider.find_image(image_id)
    if image is None:
        return error(404, f"No image found with ID {image_id}")
    return Response(200, image_body(provider, image))


SERVICE = Service(prefix="image", router=router, error=error)
