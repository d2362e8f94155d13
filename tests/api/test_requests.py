"""Requests and instances through the API: accept, idempotency, isolation, filters, delete, extend."""

from __future__ import annotations

import pytest

from chalicelib import models, timeutil
from tests.conftest import arrange, provider_body, register_down, unique

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop"


def test_request_of_three_is_accepted_with_three_pending_instances(user_api, provider):
    response = user_api.post("/requests", json={"label": "ubuntu-small", "count": 3, "lifetime_minutes": 45})
    assert response.status_code == 202, response.text
    request = response.json()
    assert request["state"] == "pending"
    assert request["counts"]["PENDING"] == 3
    assert request["lifetime_minutes"] == 45 and request["name_prefix"] == "oms"
    created, expires = timeutil.parse(request["created_at"]), timeutil.parse(request["expires_at"])
    assert (expires - created).total_seconds() == 45 * 60
    listed = user_api.get("/instances", params={"request_id": request["id"]}).json()["items"]
    assert sorted(i["id"] for i in listed) == sorted(i["id"] for i in request["instances"])
    for instance in listed:
        assert instance["state"] == "PENDING" and instance["provider"] is None and instance["server_id"] is None
        assert instance["addresses"] == {"ipv4": [], "ipv6": []} and instance["attempts"] == []
        assert instance["name"].startswith("oms-") and instance["expires_at"] == request["expires_at"]
    assert len({i["name"] for i in listed}) == 3


def test_client_token_makes_a_retry_return_the_same_request(user_api, provider):
    body = {"label": "ubuntu-small", "count": 2, "client_token": "build-42"}
    first = user_api.post("/requests", json=body)
    again = user_api.post("/requests", json=body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(user_api.get("/instances", params={"request_id": first.json()["id"]}).json()["items"]) == 2
    other = user_api.post("/requests", json={**body, "count": 3})
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "client_token"


def test_client_tokens_are_per_owner(user_api, admin_api, provider):
    body = {"label": "ubuntu-small", "count": 1, "client_token": "same-token"}
    mine = user_api.post("/requests", json=body)
    theirs = admin_api.post("/requests", json=body)
    assert theirs.status_code in (200, 202)
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_retry_rewrites_instances_a_crash_left_out(user_api, provider):
    body = {"label": "ubuntu-small", "count": 3, "client_token": unique("crash")}
    request = user_api.post("/requests", json=body).json()
    models.Instance.get(request["instances"][1]["id"]).delete()  # as if the first write stopped short
    again = user_api.post("/requests", json=body)
    assert again.status_code == 200
    assert sorted(i["id"] for i in again.json()["instances"]) == sorted(i["id"] for i in request["instances"])


def test_a_retry_of_a_request_that_is_over_brings_back_no_instance(user_api, provider):
    body = {"label": "ubuntu-small", "count": 2, "client_token": unique("late")}
    request = user_api.post("/requests", json=body).json()
    models.Request(request["id"]).update(actions=[models.Request.expires_at.set("2020-01-01T00:00:00Z")])
    models.Instance.get(request["instances"][0]["id"]).delete()  # as the TTL drops an ended one
    again = user_api.post("/requests", json=body)
    assert again.status_code == 200
    assert [i["id"] for i in again.json()["instances"]] == [request["instances"][1]["id"]]


def test_unknown_label_is_422(user_api, provider):
    response = user_api.post("/requests", json={"label": unique("nolabel"), "count": 1})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unprocessable"
    assert response.json()["error"]["field"] == "label"


def test_label_of_a_disabled_provider_is_422(admin_api):
    label = unique("lbl")
    body = provider_body(enabled=False, labels={label: {"image": "i", "flavor": "f"}})
    assert admin_api.post("/providers", json=body).status_code == 201
    assert admin_api.post("/requests", json={"label": label, "count": 1}).status_code == 422


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 1001}, "count"),
        ({"count": 2.5}, "count"),
        ({"count": True}, "count"),
        ({"count": None}, "count"),
        ({"label": None}, "label"),
        ({"label": "has space"}, "label"),
        ({"lifetime_minutes": 0}, "lifetime_minutes"),
        ({"lifetime_minutes": 1441}, "lifetime_minutes"),
        ({"name_prefix": "UPPER"}, "name_prefix"),
        ({"name_prefix": "x" * 33}, "name_prefix"),
        ({"ssh_public_key": "not a key"}, "ssh_public_key"),
        (
            {"ssh_public_key": "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"},
            "ssh_public_key",
        ),
        ({"ssh_public_key": SSH_KEY + "\n" + SSH_KEY}, "ssh_public_key"),
        ({"user_data": "x" * (16 * 1024 + 1)}, "user_data"),
        ({"user_data": "é" * (9 * 1024)}, "user_data"),
        ({"client_token": ""}, "client_token"),
        ({"client_token": "x" * 65}, "client_token"),
        ({"client_token": "tab\there"}, "client_token"),
        ({"flavor": "m1.small"}, "flavor"),
    ],
)
def test_invalid_request_is_400_naming_the_field(user_api, provider, change, field):
    body = {"label": "ubuntu-small", "count": 1, **change}
    body = {k: v for k, v in body.items() if not (v is None and k in ("count", "label"))} | {
        k: v for k, v in change.items() if v is None
    }
    response = user_api.post("/requests", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["code"] == "validation_error"


def test_valid_optional_fields_are_accepted(user_api, provider):
    body = {
        "label": "ubuntu-small",
        "count": 1,
        "name_prefix": "ci-run",
        "ssh_public_key": SSH_KEY,
        "user_data": "#cloud-config\npackages: [htop]\n",
        "client_token": unique("tok"),
    }
    response = user_api.post("/requests", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["instances"][0]["name"].startswith("ci-run-")


def test_owners_are_isolated(user_api, admin_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1}).json()
    instance_id = request["instances"][0]["id"]
    other = admin_api.as_key(admin_api.post("/keys", json={"name": "bob", "role": "user"}).json()["key"])
    assert other.get(f"/requests/{request['id']}").status_code == 404
    assert other.get(f"/instances/{instance_id}").status_code == 404
    assert other.delete(f"/requests/{request['id']}").status_code == 404
    assert other.delete(f"/instances/{instance_id}").status_code == 404
    assert other.post(f"/requests/{request['id']}/extend", json={"minutes": 5}).status_code == 404
    assert other.get("/requests").json()["items"] == []
    assert other.get("/instances").json()["items"] == []
    assert other.get("/instances", params={"request_id": request["id"]}).json()["items"] == []
    assert other.get("/requests", params={"owner": request["owner"]}).status_code == 403
    assert [r["id"] for r in user_api.get("/requests").json()["items"]] == [request["id"]]
    # The admin sees everyone's, and can filter by owner.
    assert admin_api.get(f"/requests/{request['id']}").status_code == 200
    by_owner = admin_api.get("/requests", params={"owner": request["owner"]}).json()["items"]
    assert [r["id"] for r in by_owner] == [request["id"]]


def test_missing_objects_are_404(user_api):
    for path in ("/requests/r-0000", "/instances/i-0000"):
        response = user_api.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_instance_filters_combine(admin_api, user_api, provider):
    label = unique("lbl")
    body = register_down(
        admin_api, labels={label: {"image": "i", "flavor": "f"}, "ubuntu-small": {"image": "i", "flavor": "f"}}
    )
    a = user_api.post("/requests", json={"label": label, "count": 2}).json()
    b = user_api.post("/requests", json={"label": "ubuntu-small", "count": 3}).json()
    placed = models.Instance.get(b["instances"][0]["id"])
    # As if launched there (ACTIVE instances are left alone by the launch pipeline).
    arrange(placed, models.ACTIVE, provider=body["name"])

    def ids(**params):
        response = user_api.get("/instances", params=params)
        assert response.status_code == 200, response.text
        return {i["id"] for i in response.json()["items"]}

    a_ids, b_ids = {i["id"] for i in a["instances"]}, {i["id"] for i in b["instances"]}
    assert ids(label=label) == a_ids
    assert ids(request_id=b["id"], state="PENDING") == b_ids - {placed.id}
    assert ids(request_id=b["id"], label=label) == set()
    assert ids(provider=body["name"]) == {placed.id}
    assert ids(provider=body["name"], state="ACTIVE") == {placed.id}
    assert ids(provider=body["name"], state="PENDING") == set()
    assert ids(state="PENDING") == a_ids | b_ids - {placed.id}
    assert ids(state="ACTIVE", label="ubuntu-small") == {placed.id}
    assert user_api.get("/instances", params={"state": "RUNNING"}).status_code == 400
    admin_ids = {i["id"] for i in admin_api.get("/instances", params={"request_id": a["id"]}).json()["items"]}
    assert admin_ids == a_ids
    admin_state = admin_api.get("/instances", params={"state": "PENDING", "label": label, "limit": 500}).json()
    assert a_ids <= {i["id"] for i in admin_state["items"]}


def test_instance_listing_pages_without_loss_or_repeat(user_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 7}).json()
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, "request_id": request["id"], **({"next": cursor} if cursor else {})}
        page = user_api.get("/instances", params=params).json()
        pages += 1
        seen += [i["id"] for i in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert sorted(seen) == sorted(i["id"] for i in request["instances"])
    assert pages >= 3


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"next": "garbage!"}, {"next": "eyJhIjogMX0"}]
)
def test_bad_paging_parameters_are_400(user_api, params):
    for path in ("/instances", "/requests", "/providers"):
        response = user_api.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["error"]["field"] in ("limit", "next")


def test_delete_request_retires_every_instance(user_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 3}).json()
    active = models.Instance.get(request["instances"][0]["id"])
    arrange(active, models.ACTIVE)
    response = user_api.delete(f"/requests/{request['id']}")
    assert response.status_code == 202
    states = sorted(i["state"] for i in response.json()["instances"])
    # Unplaced instances are done at once; the one with a server goes through DELETING.
    assert states in (["DELETED", "DELETED", "DELETING"], ["DELETED", "DELETED", "DELETED"])
    assert response.json()["state"] in ("deleting", "deleted")
    again = user_api.delete(f"/requests/{request['id']}")
    assert again.status_code == 202


def test_delete_one_instance(user_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 2}).json()
    instance_id = request["instances"][0]["id"]
    response = user_api.delete(f"/instances/{instance_id}")
    assert response.status_code == 202
    assert response.json()["state"] == "DELETED" and response.json()["deleted_at"]
    counts = user_api.get(f"/requests/{request['id']}").json()["counts"]
    assert counts["DELETED"] == 1 and counts["PENDING"] == 1


def test_extend_moves_the_expiry_of_request_and_live_instances(user_api, provider):
    request = user_api.post("/requests", json={"label": "ubuntu-small", "count": 2, "lifetime_minutes": 30}).json()
    response = user_api.post(f"/requests/{request['id']}/extend", json={"minutes": 90})
    assert response.status_code == 200, response.text
    extended = response.json()
    delta = timeutil.parse(extended["expires_at"]) - timeutil.parse(request["expires_at"])
    assert delta.total_seconds() == 90 * 60
    assert {i["expires_at"] for i in extended["instances"]} == {extended["expires_at"]}
    for bad in ({"minutes": 0}, {"minutes": 1441}, {}, {"minutes": 5, "x": 1}):
        assert user_api.post(f"/requests/{request['id']}/extend", json=bad).status_code == 400
    user_api.delete(f"/requests/{request['id']}")
    assert user_api.post(f"/requests/{request['id']}/extend", json={"minutes": 5}).status_code == 409


def test_a_cloud_config_that_is_not_yaml_is_refused_when_requested(user_api, provider):
    body = {"label": "ubuntu-small", "count": 1, "user_data": "#cloud-config\npackages: [htop\n"}
    answer = user_api.post("/requests", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "user_data"
    assert "not valid YAML" in answer.json()["error"]["message"]
