"""The scheduled sweeper on the local stack with the simulator (real openstacksdk, real moto).

The stack sweeps every 0.5 s here; tests that measure one pass pause the stack's scheduler and
run `sweeper.sweep()` themselves, in the same process as the stack.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from chalicelib import cloud, models, sweeper, timeutil
from chalicelib.settings import settings
from sim.testing import start_simulator
from tests.conftest import register_sim_provider, request_state, unique, wait_for


def provider_state(admin_api, name: str) -> dict:
    return admin_api.get(f"/providers/{name}").json()


def test_a_one_minute_request_ends_within_a_pass_of_its_lifetime_and_an_extended_one_lives_on(admin_api, user_api, sim):
    label = unique("lbl")
    register_sim_provider(admin_api, sim, "p1", label)
    short = user_api.post("/requests", json={"label": label, "count": 2, "lifetime_minutes": 1}).json()
    kept = user_api.post("/requests", json={"label": label, "count": 1, "lifetime_minutes": 1}).json()
    wait_for(lambda: request_state(user_api, short["id"])["state"] == "ready", what="short request ready")
    extended = user_api.post(f"/requests/{kept['id']}/extend", json={"minutes": 30})
    assert extended.status_code == 200, extended.text
    assert extended.json()["expires_at"] > kept["expires_at"]

    timeutil.clock.advance(60)  # the minute passes without being waited out
    ended = wait_for(
        lambda: (r := request_state(user_api, short["id"]))["state"] == "deleted" and r, timeout=150, what="expiry"
    )
    for instance in ended["instances"]:
        # Torn down (server deleted, record DELETED) within one pass of its expiry, plus the
        # teardown's own calls: generous for a busy 2-core machine, far below another lifetime.
        late = (timeutil.parse(instance["deleted_at"]) - timeutil.parse(instance["expires_at"])).total_seconds()
        assert 0 <= late < settings.sweep_seconds + 10, late
    alive = request_state(user_api, kept["id"])
    assert alive["state"] == "ready", alive
    [server] = sim.servers("p1")  # the two short-lived servers are gone, the extended one stays
    assert server["id"] == alive["instances"][0]["server_id"]
    assert server["metadata"]["oms_expires_at"] == alive["expires_at"]
    user_api.delete(f"/requests/{kept['id']}")


def test_maintenance_takes_a_provider_down_in_one_pass_and_it_comes_back_after_its_cooldown(
    stack, admin_api, user_api, sim
):
    label = unique("lbl")
    name = register_sim_provider(admin_api, sim, "p2", label)["name"]
    wait_for(lambda: provider_state(admin_api, name)["health"]["state"] == "healthy", what="first check")
    sim.control("p2", mode="maintenance")
    runs = stack.scheduler.runs
    down = wait_for(lambda: (p := provider_state(admin_api, name))["health"]["state"] == "down" and p, what="down")
    # The pass under way when maintenance began may have checked before it; the next one did not.
    assert stack.scheduler.runs <= runs + 2
    assert down["health"]["retry_at"] and down["health"]["last_error"].startswith("unavailable")

    request = user_api.post("/requests", json={"label": label, "count": 2}).json()
    with stack.scheduler.paused():
        stack.pump.pump_once()  # its launch pass found no provider
        for _ in range(3):  # each cooldown passes, and the re-drive wait: half-open checks fail again
            timeutil.clock.advance(settings.redrive_after_seconds + 1)
            sweeper.sweep()
            stack.pump.pump_once()
    assert request_state(user_api, request["id"])["counts"].get("ACTIVE", 0) == 0
    assert sim.state("p2")["calls"].get("server_create", 0) == 0

    sim.control("p2", mode="normal")  # healthy again once its cooldown ends: a check or a trial launch
    wait_for(lambda: provider_state(admin_api, name)["health"]["state"] == "healthy", what="healthy again")
    done = wait_for(lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r, what="launched")
    assert {i["provider"] for i in done["instances"]} == {name}
    user_api.delete(f"/requests/{request['id']}")


def test_a_hung_provider_does_not_hold_the_pass_beyond_its_budget(stack, admin_api, sim):
    label = unique("lbl")
    hung = register_sim_provider(admin_api, sim, "p3", label)["name"]
    fine = register_sim_provider(admin_api, sim, "p4", unique("lbl"))["name"]
    wait_for(lambda: provider_state(admin_api, hung)["health"]["state"] == "healthy", what="first check")
    sim.control("p3", mode="hang")
    budget = 2.0
    with stack.scheduler.paused():
        report = sweeper.sweep(budget=budget)
    # A hung call would hold its job for the OpenStack timeout (5 s here) at least.
    assert settings.openstack_timeout_seconds >= 5
    assert report.seconds["providers"] < budget + 1.5, report.seconds
    assert hung in report.timed_out and fine not in report.timed_out
    assert report.providers[fine].checked == "healthy"
    health = provider_state(admin_api, hung)["health"]
    assert health["state"] == "down" and "no answer within" in health["last_error"]
    sim.control("p3", mode="normal")


def test_a_real_quota_drop_from_20_to_5_caps_the_provider_after_one_pass(stack, admin_api, user_api, sim):
    label = unique("lbl")
    name = register_sim_provider(admin_api, sim, "p5", label)["name"]
    wait_for(lambda: provider_state(admin_api, name)["capacity"]["quota_instances"] == 20, what="quota 20")
    sim.control("p5", quota=5)
    runs = stack.scheduler.runs
    wait_for(lambda: provider_state(admin_api, name)["capacity"]["quota_instances"] == 5, what="quota 5")
    assert stack.scheduler.runs <= runs + 2

    request = user_api.post("/requests", json={"label": label, "count": 8}).json()
    wait_for(lambda: request_state(user_api, request["id"])["counts"].get("ACTIVE", 0) == 5, what="5 ACTIVE")
    with stack.scheduler.paused():  # passes and re-drives: still no room for the other three
        for _ in range(2):
            timeutil.clock.advance(settings.redrive_after_seconds + 1)
            sweeper.sweep()
            stack.pump.pump_once()
    counts = {state: n for state, n in request_state(user_api, request["id"])["counts"].items() if n}
    assert counts == {"ACTIVE": 5, "PENDING": 3}, counts
    assert sim.state("p5")["servers_peak"] == 5 and sim.state("p5")["quota_rejections"] == 0
    user_api.delete(f"/requests/{request['id']}")


def one_active_instance(admin_api, user_api, sim, sim_name: str) -> tuple[dict, dict]:
    """A request for one instance on a provider of its own, once ACTIVE: (request, instance)."""
    label = unique("lbl")
    register_sim_provider(admin_api, sim, sim_name, label)
    request = user_api.post("/requests", json={"label": label, "count": 1}).json()
    instance = wait_for(
        lambda: (r := request_state(user_api, request["id"]))["state"] == "ready" and r["instances"][0], what="ACTIVE"
    )
    return request, instance


def test_an_active_instance_whose_server_vanished_is_relaunched(admin_api, user_api, sim):
    request, first = one_active_instance(admin_api, user_api, sim, "p6")
    sim.request("DELETE", "providers/p6/servers")  # behind our back

    def relaunched():
        instance = user_api.get(f"/instances/{first['id']}").json()
        return instance["state"] == "ACTIVE" and instance["server_id"] != first["server_id"] and instance

    again = wait_for(relaunched, what="relaunched")
    [why] = again["attempts"]
    assert why["error"] == "unknown" and "vanished" in why["message"] and first["server_id"] in why["message"]
    assert [s["id"] for s in sim.servers("p6")] == [again["server_id"]]
    assert again["addresses"]["ipv4"]
    user_api.delete(f"/requests/{request['id']}")


def test_a_server_building_past_the_boot_timeout_is_deleted_and_its_instance_fails_over(admin_api, user_api, sim):
    label = unique("lbl")
    sim.control("p3", boot_seconds=3600)
    slow = register_sim_provider(admin_api, sim, "p3", label)["name"]
    request = user_api.post("/requests", json={"label": label, "count": 1}).json()
    instance_id = request["instances"][0]["id"]
    building = wait_for(
        lambda: (i := user_api.get(f"/instances/{instance_id}").json())["state"] == "BUILDING" and i, what="BUILDING"
    )
    fast = register_sim_provider(admin_api, sim, "p4", label)["name"]
    # Eleven minutes pass (the boot timeout is ten): the launch claim is backdated.
    models.Instance(instance_id).update(
        actions=[models.Instance.launched_at.set(timeutil.in_minutes(-11))], add_version_condition=False
    )

    def moved():
        instance = user_api.get(f"/instances/{instance_id}").json()
        return instance["state"] == "ACTIVE" and instance

    done = wait_for(moved, what="ACTIVE elsewhere")
    assert done["provider"] == fast
    [why] = done["attempts"]
    assert why["provider"] == slow and why["error"] == "timeout"
    assert building["server_id"] not in {s["id"] for s in sim.servers("p3")}
    user_api.delete(f"/requests/{request['id']}")


def test_in_use_drift_is_corrected_from_the_instances_table(stack, admin_api, user_api, sim):
    label = unique("lbl")
    name = register_sim_provider(admin_api, sim, "p7", label)["name"]
    request = user_api.post("/requests", json={"label": label, "count": 2}).json()
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "ready", what="ready")

    def in_use():
        return provider_state(admin_api, name)["capacity"]["in_use"]

    for wrong in (5, 0):  # a crash between the slot's two writes; a slot given back twice
        with stack.scheduler.paused():
            models.Provider(name).update(actions=[models.Provider.in_use.set(wrong)])
            first = sweeper.sweep()
            assert in_use() == wrong and first.providers[name].in_use_corrected is None  # seen once
            # Seen again at once, it may still be slots a launch pass reserved and has not claimed.
            assert sweeper.sweep().providers[name].in_use_corrected is None
            timeutil.clock.advance(settings.launch_stale_seconds)
            second = sweeper.sweep()
        assert second.providers[name].in_use_corrected == 2
        assert in_use() == 2
    user_api.delete(f"/requests/{request['id']}")
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")
    assert in_use() == 0


def test_slots_reserved_for_a_launch_pass_are_not_taken_for_drift_by_quick_passes(stack, admin_api, sim):
    """A launch pass reserves a round's slots at once and claims each when its create's turn comes:
    under load two sweeps 0.5 s apart can see the very same figures in between. Taking those
    slots back would let other launches over the cap."""
    from chalicelib import slots

    name = register_sim_provider(admin_api, sim, "p6", unique("lbl"))["name"]
    with stack.scheduler.paused():
        assert slots.reserve(models.Provider.get(name), 3) == 3  # reserved; no instance claimed yet
        for _ in range(3):
            assert sweeper.sweep().providers[name].in_use_corrected is None
        assert models.Provider.get(name).in_use == 3
        slots.give_back(name, 3)


def test_a_delete_that_fails_or_is_put_off_is_retried_until_the_server_is_gone(admin_api, user_api, sim):
    request, instance = one_active_instance(admin_api, user_api, sim, "p1")
    sim.control("p1", mode="maintenance")
    user_api.delete(f"/requests/{request['id']}")

    def retry_at():
        # Tried and failed, or (once a check has opened the circuit) not tried: retried later all the same.
        return models.Instance.get(instance["id"], consistent_read=True).delete_retry_at

    wait_for(retry_at, what="a delete put off")
    assert user_api.get(f"/instances/{instance['id']}").json()["state"] == "DELETING"
    assert sim.state("p1")["servers_live"] == 1
    sim.control("p1", mode="normal")
    wait_for(lambda: request_state(user_api, request["id"])["state"] == "deleted", what="deleted")
    assert sim.state("p1")["servers_live"] == 0


def test_leaked_servers_are_deleted_after_two_sweeps_and_others_never(stack, admin_api, sim):
    label = unique("lbl")
    register_sim_provider(admin_api, sim, "p5", label)
    ours = sim.add_servers(
        "p5", name="leaked", metadata={"oms_deployment": "test", "oms_instance_id": "i-gone"}, count=1
    )[0]["id"]
    foreign = sim.add_servers("p5", name="other-deployment", metadata={"oms_deployment": "prod"}, count=1)[0]["id"]
    untagged = sim.add_servers("p5", name="by-hand", count=1)[0]["id"]
    runs = stack.scheduler.runs
    wait_for(lambda: ours not in {s["id"] for s in sim.servers("p5")}, what="leak deleted")
    # Seen by one pass, deleted by the next: at least one whole pass ended in between.
    assert stack.scheduler.runs >= runs + 1, "deleted only after being seen in two passes"
    left = {s["id"] for s in sim.servers("p5")}
    assert {foreign, untagged} <= left


class DynamoOps:
    """Counts the DynamoDB operations this process sends, by name (botocore's own event hook)."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.clients = [m._get_connection().connection.client for m in (models.Provider, models.Instance)]

    def _count(self, event_name: str, **_) -> None:
        self.ops[event_name.rsplit(".", 1)[-1]] += 1

    def __enter__(self) -> DynamoOps:
        for client in self.clients:
            client.meta.events.register("before-call.dynamodb", self._count, unique_id=f"count-{id(self)}")
        return self

    def __exit__(self, *exc) -> None:
        for client in self.clients:
            client.meta.events.unregister("before-call.dynamodb", unique_id=f"count-{id(self)}")


def seed_fleet(sim, names: dict[str, str], label: str, per_provider: int) -> list[models.Instance]:
    """A fleet as the launch pipeline leaves it: on each provider `per_provider` ACTIVE instances
    whose servers carry their tags, and `in_use` to match. Written directly because this test is
    about what one pass costs at scale (the pipeline has its own tests, and launching 1,000 takes
    minutes on this machine)."""
    now, expires = timeutil.now_iso(), timeutil.in_minutes(60)
    request_id = unique("r")
    wanted = [(sim_name, name, n, unique("i")) for sim_name, name in names.items() for n in range(per_provider)]

    def add(item):
        sim_name, _, n, instance_id = item
        metadata = cloud.server_metadata(instance_id, request_id, expires)
        return sim.add_servers(sim_name, name=f"{request_id}-{n}", metadata=metadata)[0]

    with ThreadPoolExecutor(8) as pool:  # a thousand control calls, each its own server's tags
        made = list(pool.map(add, wanted))
    fleet = [
        models.Instance(
            instance_id,
            request_id=request_id,
            owner="scale-test",
            name=f"{request_id}-{index}",
            label=label,
            state=models.ACTIVE,
            provider=name,
            server_id=server["id"],
            created_at=now,
            state_changed_at=now,
            launched_at=now,
            active_at=now,
            expires_at=expires,
        )
        for index, ((_, name, _, instance_id), server) in enumerate(zip(wanted, made, strict=True))
    ]
    for name in names.values():
        models.Provider(name).update(actions=[models.Provider.in_use.set(per_provider)])
    with models.Instance.batch_write() as batch:
        for instance in fleet:
            batch.save(instance)
    return fleet


def calls_by_provider(sim, sim_names) -> dict[str, Counter]:
    return {p: Counter(sim.state(p)["calls"]) for p in sim_names}


def test_a_pass_over_50_providers_and_1000_instances_costs_a_few_calls_per_provider_and_no_scan(stack, admin_api):
    with start_simulator(providers=50, quota=20, boot_seconds=0.1, seed=50) as sim:
        label = unique("lbl")
        sim_names = [f"p{n}" for n in range(1, 51)]
        with ThreadPoolExecutor(8) as pool:
            registered = pool.map(lambda sim_name: register_sim_provider(admin_api, sim, sim_name, label), sim_names)
            names = {sim_name: provider["name"] for sim_name, provider in zip(sim_names, registered, strict=True)}
        # The stack's own passes wait meanwhile: they would share the simulator's counters.
        with stack.scheduler.paused():
            fleet = seed_fleet(sim, names, label, per_provider=20)
            try:
                wait_for(
                    lambda: all(not sim.state(s)["servers_by_status"].get("BUILD") for s in names), what="all ACTIVE"
                )
                start = calls_by_provider(sim, names)
                cold = sweeper.sweep()  # the first pass of a process also authenticates and discovers
                warm_start = calls_by_provider(sim, names)
                with DynamoOps() as dynamo:
                    warm = sweeper.sweep()
                end = calls_by_provider(sim, names)
            finally:
                with models.Instance.batch_write() as batch:
                    for instance in fleet:
                        batch.delete(instance)

                def forget(name: str) -> None:
                    models.Provider(name).update(actions=[models.Provider.in_use.set(0)])
                    admin_api.delete(f"/providers/{name}")

                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(forget, names.values()))
    for sim_name, name in names.items():
        first, second = warm_start[sim_name] - start[sim_name], end[sim_name] - warm_start[sim_name]
        # token + limits + server list; a token is fetched again only when it has expired
        assert sum(second.values()) <= 3, (sim_name, second)
        assert second["limits"] == 1 and second["server_list"] == 1, (sim_name, second)
        # cold: plus one token and the compute endpoint's version discovery
        assert sum(first.values()) <= 5, (sim_name, first)
        for report in (cold, warm):
            assert report.providers[name].checked == "healthy" and report.providers[name].listed
            assert report.providers[name].in_use_corrected is None  # 20 held, 20 counted
    assert dynamo.ops["Scan"] == 0 and dynamo.ops["Query"] > 0, dynamo.ops
    for report in (cold, warm):
        assert not report.timed_out and not report.expired
        assert not report.each("vanished") and not report.each("leaks_deleted")


def test_no_code_path_scans_a_table():
    import pathlib

    sources = [*pathlib.Path("chalicelib").glob("*.py"), pathlib.Path("app.py")]
    assert sources and not [str(p) for p in sources if ".scan(" in p.read_text()]


def test_the_two_range_queries_cover_exactly_the_slot_holding_states():
    from chalicelib import slots

    covered = {state for state in models.STATES for low, high in slots._HELD_RANGES if low <= state <= high}
    assert covered - set(slots.HOLDING) <= set(models.TERMINAL_STATES)  # filtered out by state
    assert set(slots.HOLDING) <= covered
