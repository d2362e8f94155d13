"""API keys and roles: 401 without a known key, 403 for the wrong role, revocation at once."""

from __future__ import annotations

import pytest


def test_unknown_missing_and_malformed_keys_are_401(admin_api):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = admin_api.get("/requests", key=None, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"


def test_key_is_shown_once_and_listed_without_it(admin_api):
    created = admin_api.post("/keys", json={"name": "ci-bot", "role": "user"})
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("oms_") and len(body["key"]) > 50
    assert {"id", "name", "role"} <= set(body)
    listed = admin_api.get("/keys", params={"limit": 500}).json()["items"]
    mine = [k for k in listed if k["id"] == body["id"]]
    assert mine and "key" not in mine[0]
    assert all("key" not in k and "key_hash" not in k for k in listed)


def test_deleted_key_stops_working_at_once(admin_api, user_api):
    assert user_api.get("/requests").status_code == 200
    key_id = user_api.key.split("_")[1]
    assert admin_api.delete(f"/keys/{key_id}").status_code == 204
    assert user_api.get("/requests").status_code == 401
    assert admin_api.delete(f"/keys/{key_id}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/providers"),
        ("PATCH", "/providers/x"),
        ("DELETE", "/providers/x"),
        ("POST", "/providers/x/check"),
        ("POST", "/keys"),
        ("GET", "/keys"),
        ("DELETE", "/keys/x"),
    ],
)
def test_user_key_on_admin_routes_is_403(user_api, method, path):
    response = user_api.call(method, path, json={})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_key_body_is_validated(admin_api):
    cases = [
        ({"name": "x"}, "role"),
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "", "role": "user"}, "name"),
        ({"name": "x", "role": "user", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        response = admin_api.post("/keys", json=body)
        assert response.status_code == 400
        assert response.json()["error"]["field"] == field


def test_keys_are_stored_as_hashes_only(admin_api):
    from chalicelib import models

    key = admin_api.post("/keys", json={"name": "hashed", "role": "user"}).json()
    item = models.ApiKey.get(key["id"])
    stored = str(item.attribute_values)
    assert key["key"] not in stored
    assert len(item.key_hash) == 64


def test_the_key_making_the_call_cannot_revoke_itself(admin_api):
    other_admin = admin_api.as_key(
        admin_api.post("/keys", json={"name": "second-admin", "role": "admin"}).json()["key"]
    )
    me = other_admin.get("/me").json()
    refused = other_admin.delete(f"/keys/{me['id']}")
    assert refused.status_code == 409 and "another admin key" in refused.json()["error"]["message"]
    assert other_admin.get("/me").status_code == 200  # still works
    assert admin_api.delete(f"/keys/{me['id']}").status_code == 204  # another admin revokes it
    assert other_admin.get("/me").status_code == 401
