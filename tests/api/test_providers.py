"""Provider accounts through the API: register, read, change, rotate, remove; secrets kept secret."""

from __future__ import annotations

import json

import pytest

from chalicelib import aws, credentials, lifecycle, models, timeutil
from tests.conftest import dump_tables, provider_body, unique


def test_register_with_password_keeps_the_secret_out_of_answers_and_tables(admin_api, user_api):
    body = provider_body(region="RegionOne")
    created = admin_api.post("/providers", json=body)
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["auth_type"] == "password" and view["username"] == "demo"
    assert view["user_domain_name"] == "Default" and view["priority"] == 100 and view["enabled"] is True
    assert view["health"]["state"] == "unknown"
    assert view["capacity"] == {"max_instances": 20, "quota_instances": None, "in_use": 0, "available": 20, "rooms": {}}
    for response in (
        created,
        admin_api.get(f"/providers/{body['name']}"),
        admin_api.get("/providers", params={"limit": 500}),
        user_api.get("/providers", params={"limit": 500}),
    ):
        assert response.status_code in (200, 201)
        assert body["password"] not in response.text
        assert "password" not in json.dumps(response.json()).replace('"auth_type": "password"', "")
    assert body["password"] not in dump_tables()
    item = models.Provider.get(body["name"])
    assert credentials.load(item.name, item.secret_version) == {"password": body["password"]}


def test_user_sees_only_the_public_fields(user_api, provider):
    view = user_api.get(f"/providers/{provider['name']}").json()
    # launch_times too: how long launches take there is what a user plans a request by.
    assert set(view) == {"name", "region", "enabled", "labels", "maintenance", "health", "capacity", "launch_times"}


def test_register_with_application_credential(admin_api):
    body = provider_body(
        auth_url="https://identity.example.com/v3",
        application_credential_id="ac-1",
        application_credential_secret="acsecret-" + unique(),
    )
    del body["username"], body["password"], body["project_name"]
    view = admin_api.post("/providers", json=body).json()
    assert view["auth_type"] == "application_credential"
    assert view["application_credential_id"] == "ac-1"
    assert "username" not in view
    assert body["application_credential_secret"] not in dump_tables()


def test_duplicate_name_is_409(admin_api, provider):
    response = admin_api.post("/providers", json=provider_body(name=provider["name"]))
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "conflict",
        "message": f"provider {provider['name']} already exists",
        "field": "name",
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "-x"}, "name"),
        ({"auth_url": "file:///etc/passwd"}, "auth_url"),
        ({"auth_url": "ftp://example.com/v3"}, "auth_url"),
        ({"auth_url": "https://user:pw@example.com/v3"}, "auth_url"),
        ({"auth_url": "not a url"}, "auth_url"),
        ({"max_instances": 0}, "max_instances"),
        ({"max_instances": 10001}, "max_instances"),
        ({"max_instances": "20"}, "max_instances"),
        ({"priority": -1}, "priority"),
        ({"priority": 1001}, "priority"),
        ({"enabled": "yes"}, "enabled"),
        ({"interface": "private"}, "interface"),
        ({"boot_timeout_seconds": 29}, "boot_timeout_seconds"),
        ({"boot_timeout_seconds": 7201}, "boot_timeout_seconds"),
        ({"labels": {"ubuntu": {"image": "x"}}}, "labels.ubuntu.flavor"),
        ({"labels": {"ubuntu": {"image": "x", "flavor": "y", "disk": 1}}}, "labels.ubuntu.disk"),
        ({"labels": {"bad label": {"image": "x", "flavor": "y"}}}, "labels.bad label"),
        ({"labels": []}, "labels"),
        ({"password": None}, "password"),
        ({"project_name": None}, "project_name"),
        ({"application_credential_id": "a", "application_credential_secret": "b"}, "password"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_provider_is_400_naming_the_field(admin_api, change, field):
    body = {**provider_body(), **change}
    response = admin_api.post("/providers", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["field"] == field, error
    assert body["password"] is None or body["password"] not in response.text


def test_patch_changes_fields_and_keeps_the_rest(admin_api, provider):
    name = provider["name"]
    response = admin_api.patch(f"/providers/{name}", json={"priority": 5, "enabled": False, "max_instances": 3})
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["priority"], view["enabled"], view["max_instances"]) == (5, False, 3)
    assert view["labels"] == provider["labels"] and view["username"] == "demo"
    assert view["capacity"]["available"] == 3


def test_patch_rotates_the_password_to_a_new_secret_version(admin_api, provider):
    name = provider["name"]
    before = models.Provider.get(name)
    response = admin_api.patch(f"/providers/{name}", json={"password": "rotated-secret-value"})
    assert response.status_code == 200
    assert "rotated-secret-value" not in response.text
    after = models.Provider.get(name)
    assert after.secret_version != before.secret_version
    assert credentials.load(after.name, after.secret_version) == {"password": "rotated-secret-value"}


def test_patch_switching_to_application_credential_needs_its_secret(admin_api, provider):
    name = provider["name"]
    response = admin_api.patch(f"/providers/{name}", json={"application_credential_id": "ac"})
    assert response.status_code == 422  # well formed, but this provider would be left without a secret
    assert response.json()["error"]["field"] == "application_credential_secret"
    mixed = admin_api.patch(f"/providers/{name}", json={"application_credential_id": "ac", "password": "p"})
    assert mixed.status_code == 400 and "not both" in mixed.json()["error"]["message"]
    response = admin_api.patch(
        f"/providers/{name}", json={"application_credential_id": "ac", "application_credential_secret": "s3"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["auth_type"] == "application_credential"


def test_patch_cannot_rename_or_touch_unknown_providers(admin_api, provider):
    response = admin_api.patch(f"/providers/{provider['name']}", json={"name": "other"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "name"
    assert admin_api.patch("/providers/does-not-exist", json={"priority": 1}).status_code == 404


def test_delete_removes_provider_and_its_secret(admin_api, provider):
    name = provider["name"]
    arn = models.Provider.get(name).secret_arn
    assert admin_api.delete(f"/providers/{name}").status_code == 204
    assert admin_api.get(f"/providers/{name}").status_code == 404
    assert admin_api.delete(f"/providers/{name}").status_code == 404
    client = aws.client("secretsmanager")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_secret_value(SecretId=arn)


def test_delete_with_live_instances_is_409(admin_api, provider):
    request = admin_api.post("/requests", json={"label": "ubuntu-small", "count": 1}).json()
    instance = models.Instance.get(request["instances"][0]["id"])
    assert lifecycle.claim(instance, provider["name"])
    response = admin_api.delete(f"/providers/{provider['name']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_provider_list_pages(admin_api):
    names = sorted(admin_api.post("/providers", json=provider_body()).json()["name"] for _ in range(3))
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"next": cursor} if cursor else {})}
        page = admin_api.get("/providers", params=params).json()
        assert len(page["items"]) <= 2
        seen += [p["name"] for p in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert set(names) <= set(seen)
    assert len(seen) == len(set(seen))


def test_a_write_racing_a_delete_does_not_bring_the_provider_back(admin_api, provider):
    from chalicelib import health

    stale = models.Provider.get(provider["name"])
    assert admin_api.delete(f"/providers/{provider['name']}").status_code == 204
    # What a sweep or a launch outcome does with the item it read before the delete.
    health.record_launch_ok(stale)
    models.Provider(provider["name"]).update(actions=[models.Provider.checked_at.set("2026-01-01T00:00:00Z")])
    assert models.Provider.count(provider["name"]) == 0
    assert admin_api.get(f"/providers/{provider['name']}").status_code == 404
    assert admin_api.patch(f"/providers/{provider['name']}", json={"priority": 1}).status_code == 404
    assert admin_api.post("/providers", json=provider_body(name=provider["name"])).status_code == 201


def test_address_family_is_ipv4_unless_set_and_a_null_sets_it_back(admin_api, provider):
    name = provider["name"]
    assert provider["address_family"] == "ipv4"
    assert admin_api.patch(f"/providers/{name}", json={"address_family": "ipv6"}).json()["address_family"] == "ipv6"
    assert admin_api.get(f"/providers/{name}").json()["address_family"] == "ipv6"
    assert admin_api.patch(f"/providers/{name}", json={"address_family": None}).json()["address_family"] == "ipv4"
    refused = admin_api.patch(f"/providers/{name}", json={"address_family": "ipv5"})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "address_family"


def test_a_boot_timeout_of_its_own_or_null_for_the_deployments(admin_api, provider):
    name = provider["name"]
    assert provider["boot_timeout_seconds"] is None
    assert (
        admin_api.patch(f"/providers/{name}", json={"boot_timeout_seconds": 120}).json()["boot_timeout_seconds"] == 120
    )
    assert models.Provider.get(name).boot_timeout_seconds == 120
    assert (
        admin_api.patch(f"/providers/{name}", json={"boot_timeout_seconds": None}).json()["boot_timeout_seconds"]
        is None
    )


def test_a_label_written_without_ready_is_ready_once_ssh_answers_and_active_stays_active(admin_api):
    new = {"image": "ubuntu-22.04", "flavor": "m1.small"}
    created = admin_api.post("/providers", json=provider_body(labels={"a": new, "b": {**new, "ready": "active"}}))
    assert created.status_code == 201, created.text
    labels = created.json()["labels"]
    assert (labels["a"], labels["b"]) == ({**new, "ready": "ssh"}, {**new, "ready": "active"})
    name = created.json()["name"]
    assert models.Provider.get(name).labels.as_dict()["a"]["ready"] == "ssh"  # stored, not only shown
    patched = admin_api.patch(f"/providers/{name}", json={"labels": {"c": new}}).json()
    assert patched["labels"] == {"c": {**new, "ready": "ssh"}}


def test_maintenance_windows_are_patched_as_a_list_checked_pruned_and_shown(admin_api, user_api, provider):
    name = provider["name"]
    assert provider["maintenance"] == [] and provider["health"]["maintenance"] is False
    windows = [
        {"start": timeutil.in_minutes(120), "end": timeutil.in_minutes(180), "note": "storage upgrade"},
        {"start": timeutil.in_minutes(-60), "end": timeutil.in_minutes(-30), "note": "over already"},
        {"start": timeutil.in_minutes(-5), "end": timeutil.in_minutes(25)},
    ]
    changed = admin_api.patch(f"/providers/{name}", json={"maintenance": windows})
    assert changed.status_code == 200, changed.text
    view = changed.json()
    assert view["maintenance"] == [{**windows[2], "note": ""}, windows[0]]  # ended one dropped, earliest first
    assert view["health"]["maintenance"] is True and view["health"]["maintenance_until"] == windows[2]["end"]
    assert user_api.get(f"/providers/{name}").json()["maintenance"] == view["maintenance"]
    assert len(models.Provider.get(name).maintenance) == 2

    backwards = [{"start": timeutil.in_minutes(60), "end": timeutil.in_minutes(30)}]
    refused = admin_api.patch(f"/providers/{name}", json={"maintenance": backwards})
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "maintenance"
    too_many = [{"start": timeutil.in_minutes(10 * k + 1), "end": timeutil.in_minutes(10 * k + 5)} for k in range(21)]
    assert admin_api.patch(f"/providers/{name}", json={"maintenance": too_many}).status_code == 400
    assert admin_api.patch(f"/providers/{name}", json={"maintenance": [{"start": "soon"}]}).status_code == 400

    cleared = admin_api.patch(f"/providers/{name}", json={"maintenance": None}).json()
    assert cleared["maintenance"] == [] and cleared["health"]["maintenance"] is False
