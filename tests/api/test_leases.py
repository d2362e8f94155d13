"""The build watcher's lease on the real moto tables: one watcher per provider, and a watcher that
lost its lease neither renews nor releases the one another holds."""

from __future__ import annotations

from chalicelib import models, watcher
from tests.conftest import register_down


def test_the_lease_is_held_by_one_watcher_and_only_its_holder_renews_or_releases_it(admin_api):
    name = register_down(admin_api)["name"]
    first = watcher._lease_take(name)
    assert first and watcher._lease_take(name) is None

    assert watcher._lease_renew(name, "someone-else") is None
    watcher._lease_release(name, "someone-else")
    assert models.Provider.get(name, consistent_read=True).watch_lease_until == first

    renewed = watcher._lease_renew(name, first)
    assert renewed and renewed != first
    assert watcher._lease_renew(name, first) is None  # the old value is no longer the lease
    watcher._lease_release(name, renewed)
    assert models.Provider.get(name, consistent_read=True).watch_lease_until is None
    assert watcher._lease_take(name)


def test_an_expired_lease_can_be_taken_over(admin_api):
    name = register_down(admin_api)["name"]
    models.Provider(name).update(actions=[models.Provider.watch_lease_until.set("2000-01-01T00:00:00.000000Z|old")])
    taken = watcher._lease_take(name)
    assert taken
    watcher._lease_release(name, "2000-01-01T00:00:00.000000Z|old")  # the old holder, waking up late
    assert models.Provider.get(name, consistent_read=True).watch_lease_until == taken


def test_a_lease_on_a_deleted_provider_is_simply_not_held(admin_api):
    name = register_down(admin_api)["name"]
    held = watcher._lease_take(name)
    assert admin_api.delete(f"/providers/{name}").status_code == 204
    assert watcher._lease_renew(name, held) is None
    watcher._lease_release(name, held)
    assert watcher._lease_take(name) is None
