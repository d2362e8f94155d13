"""Warm pools in-process: a retried launch takes nothing twice, a stale retire loses to a
hand-over, a new key retires what booted with the old one."""

from __future__ import annotations

from chalicelib import fleet, lifecycle, models, pools
from tests.conftest import arrange

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx5c2l0aGVwb29sa2V5MDEyMzQ1Njc4OWFiY2RlZmdo pool@oms"


def _warm(admin_api, provider, count: int, **settings) -> list[models.Instance]:
    """A pool of the provider fixture's label with `count` instances ACTIVE on it (as if booted)."""
    answer = admin_api.call("PUT", "/pools/ubuntu-small", json={"min_ready": count, **settings})
    assert answer.status_code == 200, answer.text
    added = lifecycle.add_to_pool(models.Pool.get("ubuntu-small"), count)
    for instance in added:
        arrange(instance, models.ACTIVE, provider=provider["name"], server_id=f"s-{instance.id}", launched_at="x")
        instance.refresh()
    return added


def test_a_retried_launch_follows_the_first_ones_plan_and_takes_nothing_twice(admin_api, user_api, provider):
    warm = _warm(admin_api, provider, 3)
    body = {"label": "ubuntu-small", "count": 2, "client_token": "once"}
    made = user_api.post("/requests", json=body).json()
    assert [bool(i["pooled_at"]) for i in made["instances"]] == [True, True]
    request = models.Request.get(made["id"])
    # A retry whose index read lags (it sees no instance yet) launches again: the same two.
    again = fleet.launch(request, [])
    assert sorted(i.id for i in again) == sorted(i["id"] for i in made["instances"])
    assert len(list(models.Instance.by_request.query(made["id"]))) == 2
    assert user_api.post("/requests", json=body).json()["counts"]["ACTIVE"] == 2
    left = [i for i in warm if models.Instance.get(i.id).request_id == models.POOL_PREFIX + "ubuntu-small"]
    assert len(left) == 1

    # A retire that read the pool's instance before a request took it loses, and stops.
    stale = models.Instance.get(left[0].id)
    took = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1}).json()
    assert took["instances"][0]["id"] == stale.id
    assert lifecycle.retire_from_pool(stale) is False
    assert models.Instance.get(stale.id).state == models.ACTIVE
    admin_api.delete("/pools/ubuntu-small")


def test_a_new_pool_key_retires_the_instances_that_booted_with_the_old_one(admin_api, user_api, provider):
    warm = _warm(admin_api, provider, 2, ssh_public_key=KEY)
    assert admin_api.call("PUT", "/pools/ubuntu-small", json={"min_ready": 2}).status_code == 200
    assert {models.Instance.get(i.id).state for i in warm} == {models.DELETING}
    # Not taken by a keyless request either: they are on their way out.
    made = user_api.post("/requests", json={"label": "ubuntu-small", "count": 1}).json()
    assert not made["instances"][0]["pooled_at"]
    assert pools.counts("ubuntu-small") == {"ready": 0, "booting": 0, "pending": 0}
    admin_api.delete("/pools/ubuntu-small")
