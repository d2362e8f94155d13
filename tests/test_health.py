"""Health that tells the truth: what launches show is not undone by a check that only proves the
API answers (DESIGN.md, "Health: what checks prove, what launches prove")."""

from __future__ import annotations

from chalicelib import sweeper
from tests.conftest import register_sim_provider, request_state, unique, wait_for

UNAVAILABLE = "The server is currently unavailable"  # Nova's 503, as the simulator answers a create


def health(admin_api, name: str) -> dict:
    return admin_api.get(f"/providers/{name}").json()["health"]


def test_a_provider_whose_creates_all_fail_is_degraded_across_sweeps_until_a_launch_succeeds(
    stack, admin_api, user_api, sim
):
    label = unique("lbl")
    sim.control("p1", create_error=503)  # every create answers 503; tokens and /limits answer
    name = register_sim_provider(admin_api, sim, "p1", label)["name"]
    with stack.scheduler.paused():
        failed = user_api.post("/requests", json={"label": label, "count": 1}).json()
        # One launch pass: the create is refused and the instance waits (p1 is excluded for it).
        # The error and the state it moves are two writes (the count decides the state): wait for both.
        seen = wait_for(
            lambda: (h := health(admin_api, name))["last_error"] and h["state"] != "unknown" and h,
            what="the create's error",
        )
        assert request_state(user_api, failed["id"])["instances"][0]["attempts"][0]["error"] == "unavailable"
        assert seen["state"] in ("degraded", "down"), seen
        assert UNAVAILABLE in seen["last_error"] and seen["last_error"].startswith("unavailable")
        assert seen["last_error_at"] and seen["launch_failures"] == 1 and seen["last_launch_ok_at"] is None

        report = sweeper.sweep()  # the next sweep: its check passes, and proves only that the API answers
        assert report.providers[name].listed, "a degraded provider's instances are settled all the same"
        after = health(admin_api, name)
        assert after["checked_at"] and after["checked_at"] >= seen["last_error_at"]
        assert (after["state"], after["last_error"], after["launch_failures"]) == (
            seen["state"],
            seen["last_error"],
            1,
        )

    sim.control("p1", create_error=None)
    ok = user_api.post("/requests", json={"label": label, "count": 1}).json()
    wait_for(lambda: request_state(user_api, ok["id"])["state"] == "ready", what="launched on p1")
    healed = health(admin_api, name)
    assert (healed["state"], healed["launch_failures"]) == ("healthy", 0) and healed["last_launch_ok_at"]
    assert healed["last_error"] == seen["last_error"]  # the record of what went wrong stays, with its time
    for made in (failed, ok):
        user_api.delete(f"/requests/{made['id']}")
    wait_for(lambda: request_state(user_api, ok["id"])["state"] == "deleted", what="deleted")


def test_tokens_revoked_mid_work_are_replaced_and_the_provider_stays_healthy(admin_api, user_api, sim):
    label = unique("lbl")
    name = register_sim_provider(admin_api, sim, "p2", label)["name"]
    first = user_api.post("/requests", json={"label": label, "count": 1}).json()
    wait_for(lambda: request_state(user_api, first["id"])["state"] == "ready", what="first ready")
    before = health(admin_api, name)
    tokens = sim.state("p2")["tokens_issued"]
    assert sim.revoke_tokens("p2") >= 1  # as if they expired (ConoHa's last 24 h); the password still works

    second = user_api.post("/requests", json={"label": label, "count": 1}).json()
    wait_for(lambda: request_state(user_api, second["id"])["state"] == "ready", what="launched with a new token")
    after = health(admin_api, name)
    assert (after["state"], after["consecutive_failures"], after["last_error"]) == ("healthy", 0, before["last_error"])
    state = sim.state("p2")
    assert state["tokens_issued"] > tokens and state["errors"].get("401"), "the old token was refused, a new one made"
    for made in (first, second):
        user_api.delete(f"/requests/{made['id']}")
    wait_for(lambda: request_state(user_api, second["id"])["state"] == "deleted", what="deleted")
