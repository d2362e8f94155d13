"""Per-provider settings reach the code that acts on them (moto in-process, no cloud call)."""

from __future__ import annotations

import pytest

from chalicelib import addresses, cloud, models, watcher
from tests.conftest import arrange

BOTH_FAMILIES = addresses.typed(
    {
        "Ext-Net": [
            {"addr": "51.68.1.20", "version": 4, "OS-EXT-IPS:type": "fixed"},
            {"addr": "2001:41d0::1", "version": 6, "OS-EXT-IPS:type": "fixed"},
        ]
    }
)


def building_instance(admin_api, provider: dict, server_id: str) -> models.Instance:
    request = admin_api.post("/requests", json={"label": "ubuntu-small", "count": 1}).json()
    instance = models.Instance.get(request["instances"][0]["id"])
    arrange(instance, models.BUILDING, provider=provider["name"], server_id=server_id)
    return models.Instance.get(instance.id, consistent_read=True)


@pytest.mark.parametrize(("family", "expected"), [("ipv4", "51.68.1.20"), ("ipv6", "2001:41d0::1")])
def test_the_providers_address_family_chooses_the_access_ip_of_a_server_with_both(
    admin_api, provider, family, expected
):
    assert admin_api.patch(f"/providers/{provider['name']}", json={"address_family": family}).status_code == 200
    instance = building_instance(admin_api, provider, "srv-" + family)
    server = cloud.Server(instance.server_id, "ACTIVE", {}, BOTH_FAMILIES, None)

    still = watcher.reconcile_building(
        models.Provider.get(provider["name"]), [instance], {server.id: server}, leased=True
    )

    assert still == []
    shown = admin_api.get(f"/instances/{instance.id}").json()
    assert (shown["state"], shown["access_ip"]) == ("ACTIVE", expected)
    assert shown["addresses"] == {"ipv4": ["51.68.1.20"], "ipv6": ["2001:41d0::1"]}


def test_a_label_stored_before_ssh_became_the_default_has_no_ready_and_is_active_when_nova_says_so(admin_api, provider):
    legacy = {"ubuntu-small": {"image": "ubuntu-22.04", "flavor": "m1.small", "network": "public"}}
    models.Provider(provider["name"]).update(actions=[models.Provider.labels.set(legacy)])
    assert admin_api.get(f"/providers/{provider['name']}").json()["labels"] == legacy  # shown as stored
    instance = building_instance(admin_api, provider, "srv-legacy")
    server = cloud.Server(instance.server_id, "ACTIVE", {}, BOTH_FAMILIES, None)

    # No SSH check (nothing listens at these addresses): ACTIVE at once, as before.
    assert (
        watcher.reconcile_building(models.Provider.get(provider["name"]), [instance], {server.id: server}, leased=True)
        == []
    )
    assert models.Instance.get(instance.id).state == models.ACTIVE


def test_a_label_takes_an_image_by_properties_and_a_flavor_by_minimum_and_refuses_empty_or_unknown_ones(
    admin_api, provider
):
    path = f"/providers/{provider['name']}"
    mapping = {"image": {"os_distro": "ubuntu", "os_version": "22.04"}, "flavor": {"min_vcpus": 2, "min_ram_mb": 4096}}
    saved = admin_api.patch(path, json={"labels": {"ubuntu-small": mapping}})
    assert saved.status_code == 200, saved.text
    assert saved.json()["labels"]["ubuntu-small"] == {**mapping, "ready": "ssh"}
    for broken in ({"image": {}}, {"flavor": {}}, {"flavor": {"min_cpus": 2}}, {"image": {"os_distro": 22}}):
        answer = admin_api.patch(path, json={"labels": {"ubuntu-small": {**mapping, **broken}}})
        assert answer.status_code == 400, (broken, answer.text)
