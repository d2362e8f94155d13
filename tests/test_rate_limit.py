"""A rate-limited account on the local stack: its 429s are waited out and retried, never a fault."""

from __future__ import annotations

from tests.conftest import register_sim_provider, request_state, unique, wait_for


def test_a_rate_limited_provider_still_delivers_a_burst_and_is_never_down(admin_api, user_api, sim):
    label = unique("lbl")
    # OVH-like, only slower: over 4 requests a second (every API together), 429 with Retry-After: 1.
    sim.control("p1", rate_limit_per_second=4, rate_limit_retry_after=1)
    # No rate of our own set: every 429 it answers is ours to wait out.
    name = register_sim_provider(admin_api, sim, "p1", label)["name"]
    seen_health: set[str] = set()

    def all_active():
        seen_health.add(admin_api.get(f"/providers/{name}").json()["health"]["state"])
        import sys

        print(
            "DBG",
            request_state(user_api, request["id"])["counts"],
            admin_api.get(f"/providers/{name}").json()["health"],
            sim.state("p1")["rate_limited"],
            sim.state("p1")["calls"],
            file=sys.stderr,
        )
        state = request_state(user_api, request["id"])
        return state["counts"]["ACTIVE"] == 10 and state

    request = user_api.post("/requests", json={"label": label, "count": 10}).json()
    done = wait_for(all_active, timeout=180, what="10 ACTIVE on the rate-limited provider")
    assert sim.state("p1")["rate_limited"] > 0  # it did refuse us
    assert {i["provider"] for i in done["instances"]} == {name}
    assert "down" not in seen_health, seen_health
    assert [a for i in done["instances"] for a in i["attempts"]] == []  # no attempt failed, none excluded
    provider = admin_api.get(f"/providers/{name}").json()
    assert provider["health"]["consecutive_failures"] == 0
    assert "rate_limited" not in (provider["health"]["last_error"] or "")

    user_api.delete(f"/requests/{request['id']}")
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", timeout=120, what="DELETED")
    assert sim.state("p1")["servers_live"] == 0
