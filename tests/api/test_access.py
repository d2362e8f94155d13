"""Access: every route refuses who it must (in-process, against the app's own route table).

The tests walk the app's own route table, so a route added later is covered without touching
this file; a route that is public must be named here on purpose.
"""

from __future__ import annotations

import re

import pytest

import app as app_module
from chalicelib.routes import PUBLIC as NO_KEY

# The only routes anyone may call without a key. Adding one is a decision: add it here.
PUBLIC = {("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/"), ("GET", "/static/{name}")}


def app_routes() -> list[tuple[str, str]]:
    return sorted((method, path) for path, entry in app_module.app.routes.items() for method in entry)


def role_of(method: str, path: str) -> str:
    return app_module.api.declared[(method, path)].role


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


@pytest.fixture
def others(admin_api, user_api, provider) -> dict[str, str]:
    """Real path values: a provider, and a request, an instance and a key that belong to user_api."""
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1})
    assert request.status_code == 202, request.text
    body = request.json()
    return {
        "name": provider["name"],
        "request_id": body["id"],
        "instance_id": body["instances"][0]["id"],
        "key_id": user_api.key.split("_")[1],
        "label": "ubuntu-small",
    }


def test_every_route_is_declared_and_only_the_public_ones_need_no_key():
    routes = app_routes()
    assert len(routes) >= 20
    for method, path in routes:
        assert (method, path) in app_module.api.declared, f"{method} {path} was registered without a declaration"
        assert (role_of(method, path) == NO_KEY) == ((method, path) in PUBLIC), f"{method} {path}"


@pytest.mark.parametrize(("method", "path"), sorted(PUBLIC))
def test_public_routes_answer_without_a_key(admin_api, method, path):
    assert admin_api.call(method, fill(path, {"name": "app.js"}), key=None).status_code == 200


def test_only_the_dashboards_own_files_are_served(admin_api):
    for name in ("app.js", "app.css"):
        assert admin_api.get(f"/static/{name}", key=None).status_code == 200
    for name in ("index.html", "__init__.py", "..%2F..%2Fapp.py", "%2Fetc%2Fpasswd", "app.js.bak"):
        response = admin_api.get(f"/static/{name}", key=None)
        assert response.status_code in (403, 404), (name, response.status_code)
        assert "import" not in response.text and "root:" not in response.text


@pytest.mark.parametrize(("method", "path"), [r for r in app_routes() if r not in PUBLIC])
def test_no_key_or_a_bad_key_is_401_on_every_route(admin_api, others, method, path):
    url = fill(path, others)
    bad_headers = [
        {},
        {"Authorization": "Bearer oms_0000000000000000_" + "A" * 43},
        {"Authorization": "Basic " + admin_api.key},
        {"Authorization": admin_api.key},
    ]
    for headers in bad_headers:
        response = admin_api.call(method, url, key=None, headers=headers, json={})
        assert response.status_code == 401, (method, url, headers, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), [r for r in app_routes() if r not in PUBLIC])
def test_a_user_key_gets_403_on_admin_routes_and_never_on_user_routes(admin_api, others, method, path):
    stranger = admin_api.as_key(admin_api.post("/keys", json={"name": "stranger", "role": "user"}).json()["key"])
    response = stranger.call(method, fill(path, others), json={})
    if role_of(method, path) == "admin":
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
    else:
        assert response.status_code != 403, response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [r for r in app_routes() if role_of(*r) == "user" and re.search(r"\{(request_id|instance_id)\}", r[1])],
)
def test_a_user_key_gets_404_on_another_owners_request_or_instance(admin_api, user_api, others, method, path):
    stranger = admin_api.as_key(admin_api.post("/keys", json={"name": "stranger", "role": "user"}).json()["key"])
    before = user_api.get(f"/requests/{others['request_id']}").json()
    response = stranger.call(method, fill(path, others), json={"minutes": 5})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    # And nothing happened to it: the owner still sees the request as it was.
    after = user_api.get(f"/requests/{others['request_id']}").json()
    assert (after["counts"], after["expires_at"]) == (before["counts"], before["expires_at"])


def test_a_deleted_key_is_refused_on_every_route_at_once(admin_api, others):
    created = admin_api.post("/keys", json={"name": "short-lived", "role": "admin"}).json()
    doomed = admin_api.as_key(created["key"])
    assert doomed.get("/keys", params={"limit": 1}).status_code == 200
    assert admin_api.delete(f"/keys/{created['id']}").status_code == 204
    for method, path in app_routes():
        if (method, path) in PUBLIC:
            continue
        response = doomed.call(method, fill(path, others), json={})
        assert response.status_code == 401, (method, path, response.text)


def test_keys_are_high_entropy_and_distinct(admin_api):
    keys = [admin_api.post("/keys", json={"name": "entropy", "role": "user"}).json() for _ in range(5)]
    secrets = [k["key"].split("_", 2)[2] for k in keys]
    assert len(set(secrets)) == 5
    assert all(len(s) >= 43 for s in secrets)  # 256 bits, URL-safe base64
    listed = {k["id"] for k in admin_api.get("/keys", params={"limit": 500}).json()["items"]}
    assert {k["id"] for k in keys} <= listed
    for key in keys:
        assert admin_api.delete(f"/keys/{key['id']}").status_code == 204


# --- the local stack --------------------------------------------------------------------
