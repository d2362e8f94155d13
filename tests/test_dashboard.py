"""The web dashboard in a real Chromium (Debian's, driven by Playwright) against the local stack.

Screenshots of every page at 1280 and 390 px are written to test-artifacts/dashboard/.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chalicelib import models, timeutil
from chalicelib.settings import settings
from tests.conftest import ADMIN_KEY, provider_body, register_down, register_sim_provider, sim_label, unique, wait_for

CHROMIUM = os.environ.get("OMS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
PAGES = ("overview", "providers", "requests", "instances")
WIDTHS = (1280, 390)
SLOW = 120_000  # ms: launches on the simulator, on a busy 2-core machine


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (make test does), or set OMS_CHROMIUM")
    with sync_playwright() as playwright:
        # Chromium's sandbox needs a user namespace, which root in a container does not get.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


class Console:
    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def unexpected(self, allowed: str | None = None) -> list[str]:
        return [e for e in self.errors if not (allowed and re.search(allowed, e))]


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.console = Console(page)
    page.goto(stack.url)
    yield page
    context.close()


def sign_in(page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#nav").wait_for(state="visible")


def show(page, view: str) -> None:
    page.get_by_role("link", name=view.capitalize()).click()
    page.locator(f"#{view}").wait_for(state="visible")


def screenshots(page, tag: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for view in PAGES:
        show(page, view)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(300)
            # Nothing is wider than the screen: wide tables scroll inside their own box.
            assert page.evaluate("document.documentElement.scrollWidth") <= width, (view, width)
            page.screenshot(path=str(ARTIFACTS / f"{tag}-{view}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_add_a_provider_request_five_watch_them_come_up_and_delete_them(page, sim, admin_api):
    sign_in(page, ADMIN_KEY)
    credentials = sim.state("p1")["credentials"]
    name, label = unique("web"), unique("lbl")

    show(page, "providers")
    form = page.locator("#provider-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Keystone URL").fill(sim.auth_url("p1"))
    form.get_by_label("Region").fill("RegionOne")
    form.get_by_label("Username", exact=True).fill(credentials["username"])
    form.get_by_label("Password", exact=True).fill(credentials["password"])
    form.get_by_label("Project name").fill(credentials["project_name"])
    row = form.locator(".label-row").first
    assert row.get_by_label("Ready").input_value() == "ssh"  # a new label waits for SSH
    row.get_by_label("Ready").select_option("active")  # this test is about launching, not readiness
    row.get_by_label("Label", exact=True).fill(label)
    row.get_by_label("Image").fill("ubuntu-22.04")
    row.get_by_label("Flavor").fill("m1.small")
    row.get_by_label("Network (optional)").fill("public")
    form.get_by_role("button", name="Add provider").click()
    provider_row = page.locator(f'tr[data-provider="{name}"]')
    provider_row.wait_for()
    assert form.get_by_label("Password", exact=True).input_value() == ""  # the form forgets it once sent
    provider_row.get_by_role("button", name="Check now").click()
    provider_row.locator(".badge.healthy").wait_for()

    # A preferred provider whose every server ends in ERROR: instances fail over, and say why.
    sim.control("p2", error_rate=1.0)
    register_sim_provider(admin_api, sim, "p2", label, priority=10)

    show(page, "requests")
    form = page.locator("#request-form")
    form.get_by_label("Label").select_option(label)
    form.get_by_label("How many").fill("5")
    form.get_by_label("Lifetime (minutes)").fill("30")
    form.get_by_role("button", name="Request", exact=True).click()
    card = page.locator("li.card").filter(has_text=f"{label} × 5")
    card.locator(".progress", has_text="5/5 ACTIVE").wait_for(timeout=SLOW)
    request_id = card.get_attribute("data-request")

    show(page, "instances")
    page.locator("#instance-filters").get_by_label("Request").select_option(request_id)
    rows = page.locator("#instance-table tbody tr[data-state=ACTIVE]")
    # Only this request's rows, all ACTIVE (other tests' instances may share the table unfiltered).
    expect(page.locator("#instance-table tbody tr[data-instance]")).to_have_count(5)
    expect(rows).to_have_count(5)
    for index in range(5):
        assert re.search(r"\d+\.\d+\.\d+\.\d+", rows.nth(index).locator(".addr").first.inner_text())
    assert page.locator(f'#instance-table tr[data-instance] td:nth-child(3):has-text("{name}")').count() == 5
    first_ip = rows.first.locator(".addr").first
    first_ip.get_by_role("button", name=re.compile("^Copy")).click()
    assert page.evaluate("navigator.clipboard.readText()") == first_ip.inner_text().removesuffix("Copy").strip()
    attempts = rows.first.locator("details")
    attempts.locator("summary").click()
    assert "build_failed" in attempts.locator("ol").inner_text()

    show(page, "overview")
    page.locator(f'.spread-row[data-provider="{name}"]', has_text="5 / 20").wait_for()
    screenshots(page, "admin")

    show(page, "requests")
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    card.locator(".badge.deleted").wait_for(timeout=SLOW)
    show(page, "instances")
    assert page.locator("#instance-filters").get_by_label("Request").input_value() == request_id
    expect(page.locator("#instance-table tbody tr[data-state=DELETED]")).to_have_count(5, timeout=SLOW)
    expect(page.locator("#instance-table tbody tr[data-instance]")).to_have_count(5)
    assert page.console.unexpected() == []


def test_form_errors_from_the_api_are_shown_next_to_their_field(page, admin_api):
    sign_in(page, ADMIN_KEY)
    show(page, "providers")
    form = page.locator("#provider-form")
    form.get_by_label("Name", exact=True).fill(unique("bad"))
    form.get_by_label("Keystone URL").fill("file:///etc/passwd")
    form.get_by_label("Username", exact=True).fill("u")
    form.get_by_label("Password", exact=True).fill("p")
    form.get_by_label("Project name").fill("x")
    form.get_by_role("button", name="Add provider").click()
    error = form.locator('[data-error-for="auth_url"]')
    error.wait_for()
    assert "http(s)" in error.inner_text()
    assert form.get_by_label("Keystone URL").get_attribute("aria-invalid") == "true"
    # The 400 itself is the only console error (Chromium logs every failed fetch).
    assert page.console.unexpected(allowed="status of 400") == []


def test_values_from_the_api_are_shown_as_text_never_run(page, admin_api):
    html = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    body = provider_body(region=html)
    assert admin_api.post("/providers", json=body).status_code == 201
    models.Provider(body["name"]).update(actions=[models.Provider.last_error.set(f"{html} from the provider")])
    sign_in(page, ADMIN_KEY)
    show(page, "providers")
    row = page.locator(f'tr[data-provider="{body["name"]}"]')
    row.wait_for()
    assert html in row.inner_text()
    assert row.locator("img, script").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.console.unexpected() == []


def test_users_see_no_admin_actions_and_sign_out_forgets_the_key(page, user_api, provider):
    page.get_by_label("API key").fill("oms_0000000000000000_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    page.locator('[data-error-for="key"]', has_text="This key is not accepted.").wait_for()
    sign_in(page, user_api.key)
    show(page, "providers")
    row = page.locator(f'tr[data-provider="{provider["name"]}"]')
    row.wait_for()
    assert page.locator("#provider-form").is_hidden()
    assert row.get_by_role("button").count() == 0
    assert row.get_by_role("checkbox").is_disabled()
    assert "user" in page.locator("#who-name").inner_text()
    # Every control has a label a screen reader can read.
    unlabelled = page.evaluate(
        """Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
            .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("sessionStorage.getItem('oms.apiKey')") is None
    assert page.locator("#provider-table tbody tr").count() == 0  # nothing left for the next key
    page.reload()
    page.get_by_label("API key").wait_for()
    assert page.locator("#nav").is_hidden()
    assert page.console.unexpected(allowed="status of 401") == []  # the refused key's answer


def test_edit_switch_off_and_delete_a_provider_and_extend_a_request(page, admin_api, provider):
    name = provider["name"]
    secret_version = models.Provider.get(name).secret_version
    deletes = []
    page.on("request", lambda r: r.method == "DELETE" and "/providers/" in r.url and deletes.append(r.url))
    # Label settings the form has no field for must survive an edit made in it, and so must an
    # image chosen by properties and a flavor by a minimum (shown and sent back as JSON).
    mapping = {
        "image": {"os_distro": "ubuntu", "os_version": "22.04"},
        "flavor": {"min_vcpus": 2},
        "security_groups": ["ssh"],
        "ssh_port": 2222,
        "ready": "active",
    }
    assert admin_api.patch(f"/providers/{name}", json={"labels": {"ubuntu-small": mapping}}).status_code == 200
    sign_in(page, ADMIN_KEY)
    show(page, "providers")
    row = page.locator(f'tr[data-provider="{name}"]')
    row.get_by_role("button", name="Edit").click()
    form = page.locator("#provider-form")
    assert form.get_by_label("Name", exact=True).input_value() == name
    form.get_by_label("Priority (lower is used first)").fill("7")
    form.get_by_label("Floating IPs", exact=True).select_option("auto")
    assert form.locator(".label-row").first.get_by_label("Ready").input_value() == "active"
    form.locator(".label-row").first.get_by_label("Ready").select_option("ssh")
    form.get_by_label("Address to SSH to").select_option("ipv6")
    form.get_by_label("Boot timeout in seconds (optional)").fill("900")
    form.get_by_label("Takes MIME multipart user data (off for ConoHa)").uncheck()
    form.get_by_role("button", name="Save changes").click()
    row.locator("td:nth-child(5)", has_text="7").wait_for()
    saved = admin_api.get(f"/providers/{name}").json()
    assert saved["priority"] == 7 and saved["floating_ip"] == "auto"
    assert (saved["address_family"], saved["boot_timeout_seconds"], saved["multipart_user_data"]) == (
        "ipv6",
        900,
        False,
    )
    assert saved["labels"]["ubuntu-small"] == {**mapping, "ready": "ssh"}
    assert models.Provider.get(name).secret_version == secret_version  # an empty password keeps the secret

    row.get_by_role("checkbox").uncheck()
    page.locator("#status", has_text=f"{name} disabled").wait_for()
    assert admin_api.get(f"/providers/{name}").json()["enabled"] is False
    row.get_by_role("checkbox").check()
    page.locator("#status", has_text=f"{name} enabled").wait_for()

    request = admin_api.post("/requests", json={"label": "ubuntu-small", "count": 2, "lifetime_minutes": 10}).json()
    show(page, "requests")
    card = page.locator(f'li.card[data-request="{request["id"]}"]')
    # Its provider is down: the card says so once the launch pass has found no provider (and is
    # drawn again then); click once it has settled.
    card.locator(".waiting", has_text="none healthy").wait_for()
    card.get_by_role("button", name="Extend 30 min").click()
    page.locator("#status", has_text=f"{request['id']} now expires").wait_for()
    after = admin_api.get(f"/requests/{request['id']}").json()
    moved = timeutil.parse(after["expires_at"]) - timeutil.parse(request["expires_at"])
    assert 29 * 60 <= moved.total_seconds() <= 31 * 60, moved
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    card.locator(".badge.deleted").wait_for(timeout=SLOW)

    show(page, "providers")
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Delete").click()
    # The page sends in order: once a later call (a check) has gone out, a DELETE would have too.
    with page.expect_response(lambda r: r.url.endswith(f"/providers/{name}/check")):
        row.get_by_role("button", name="Check now").click()
    assert deletes == [] and admin_api.get(f"/providers/{name}").status_code == 200  # dismissed: nothing sent
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    row.wait_for(state="detached")
    assert len(deletes) == 1 and admin_api.get(f"/providers/{name}").status_code == 404
    assert page.console.unexpected() == []


def test_a_notice_fades_and_an_error_stays(page, admin_api, provider):
    page.clock.install()  # the page's own timers move only when the test moves them
    page.reload()
    sign_in(page, ADMIN_KEY)
    show(page, "providers")
    name = provider["name"]
    row = page.locator(f'tr[data-provider="{name}"]')
    status = page.locator("#status")
    row.get_by_role("checkbox").uncheck()
    expect(status).to_have_text(f"{name} disabled.")
    page.clock.run_for(5_000)
    expect(status).to_have_text(f"{name} disabled.")
    page.clock.run_for(2_500)  # past the notice's 6 s and its 1 s fade
    expect(status).to_have_text("")

    # The next change is refused (as the API refuses one, in its error shape): an error notice.
    refusal = json.dumps({"error": {"code": "conflict", "message": "changing too fast; try again"}})
    page.route(
        f"**/providers/{name}",
        lambda route: (
            route.fulfill(status=409, content_type="application/json", body=refusal)
            if route.request.method == "PATCH"
            else route.continue_()
        ),
    )
    row.get_by_role("checkbox").click()  # refused, so the box may be put back: click, not check
    expect(status).to_contain_text(f"Could not change {name}")
    page.clock.run_for(60_000)
    expect(status).to_contain_text(f"Could not change {name}")
    assert page.console.unexpected(allowed="409") == []


def test_boot_a_test_instance_shows_every_step_and_a_failed_one_says_why(page, admin_api):
    from sim.testing import start_simulator
    from tests.conftest import SIM_SSH_PORT, ssh_ready_label

    with start_simulator(providers=2, boot_seconds=0.2, ssh_port=SIM_SSH_PORT) as sim:
        sim.control("p1", security_groups_open=True)  # p2 keeps its default group: port closed
        label = unique("lbl")
        good = register_sim_provider(admin_api, sim, "p1", label, labels=ssh_ready_label(label))["name"]
        closed = register_sim_provider(admin_api, sim, "p2", label, labels=ssh_ready_label(label))["name"]
        sign_in(page, ADMIN_KEY)
        show(page, "providers")
        row = page.locator(f'tr[data-provider="{good}"]')
        row.get_by_role("button", name="Boot a test instance").click()
        canary = row.locator('details.canary[data-canary="passed"]')
        expect(canary).to_contain_text(f"Test boot of {label}: passed in", timeout=SLOW)
        expect(canary.locator("tbody tr")).to_have_count(9)
        assert canary.evaluate("d => d.open")  # the steps of a boot asked for here are shown
        assert canary.locator('tr[data-ok="failed"]').count() == 0
        expect(canary.locator('tr[data-step="ssh"] td').nth(3)).to_contain_text("SSH-2.0-")
        # Its boot timeout passes while p2's server stays unreachable: the failed step says why.
        other = page.locator(f'tr[data-provider="{closed}"]')
        other.get_by_role("button", name="Boot a test instance").click()
        expect(other.locator('details.canary[data-canary="running"]')).to_be_visible(timeout=SLOW)
        expect(other.get_by_role("button", name="Test boot running…")).to_be_disabled()
        expect(other.locator('details.canary tr[data-step="active"]')).to_have_count(1, timeout=SLOW)
        timeutil.clock.advance(settings.boot_timeout_seconds + 1)
        failed = other.locator('details.canary[data-canary="failed"]')
        expect(failed).to_contain_text("failed at ssh", timeout=SLOW)
        expect(failed.locator('tr[data-ok="failed"]')).to_contain_text("no SSH banner")
        assert page.console.unexpected() == []


def test_maintenance_windows_are_shown_added_and_removed_on_the_provider_row(page, admin_api, provider):
    name = provider["name"]
    on = {"start": timeutil.in_minutes(-5), "end": timeutil.in_minutes(55), "note": "hypervisors"}
    assert admin_api.patch(f"/providers/{name}", json={"maintenance": [on]}).status_code == 200
    sign_in(page, ADMIN_KEY)
    show(page, "providers")
    row = page.locator(f'tr[data-provider="{name}"]')
    row.locator(".badge.maintenance").wait_for()
    row.locator(".maintenance", has_text="hypervisors").wait_for()
    row.get_by_text("Maintenance window…").click()
    # datetime-local is the browser's zone (UTC here: TZ is not set for Chromium in the tests' container).
    later = timeutil.now() + timedelta(hours=3)
    row.get_by_label("Maintenance start").fill(later.strftime("%Y-%m-%dT%H:%M"))
    row.get_by_label("Maintenance end").fill((later + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    row.get_by_label("Maintenance note").fill("network")
    row.get_by_role("button", name="Add window").click()
    row.locator(".maintenance", has_text="network").wait_for()
    windows = admin_api.get(f"/providers/{name}").json()["maintenance"]
    assert [w["note"] for w in windows] == ["hypervisors", "network"]
    # Each window not yet ended shows its start, end and note: the one on now and the upcoming one.
    for window in windows:
        shown = row.locator(f'.maintenance[data-window="{window["start"]}"]')
        expect(shown).to_contain_text(f"{window['start']} → {window['end']} · {window['note']}")
    row.get_by_role("button", name=f"Remove maintenance window 1 of {name}").click()
    row.locator(".maintenance", has_text="hypervisors").wait_for(state="detached")
    row.locator(".badge.maintenance").wait_for(state="detached")
    assert [w["note"] for w in admin_api.get(f"/providers/{name}").json()["maintenance"]] == ["network"]
    assert page.console.unexpected() == []


def test_waiting_instances_say_why_and_when_and_bars_are_scaled_to_each_cap(page, stack, admin_api, user_api):
    """Issue 19: a request that found no provider shows why it waits and its ETA; a provider's
    capacity bar is scaled to its own cap, and its measured launch times are shown."""
    from chalicelib import lifecycle

    label = unique("lbl")
    down = register_down(admin_api, labels={label: sim_label()}, max_instances=4)
    made = user_api.post("/requests", json={"label": label, "count": 2}).json()
    wait_for(lambda: user_api.get(f"/requests/{made['id']}").json()["waiting"], what="a reason")
    eta = timeutil.in_minutes(10)
    with stack.scheduler.paused():  # the sweeper would find no slot to expect (the provider is down)
        for instance in models.Instance.by_request.query(made["id"]):
            lifecycle.note_waiting(instance, eta=eta)  # as the sweeper does from the slots' expiries
        _see_waiting(page, made, down, eta)
    user_api.delete(f"/requests/{made['id']}")


def _see_waiting(page, made, down, eta: str) -> None:
    sign_in(page, ADMIN_KEY)
    show(page, "requests")
    card = page.locator(f'[data-request="{made["id"]}"] .waiting')
    card.wait_for()
    # The browser counts down on its own clock (tests may have moved the product's): the time is the ETA.
    assert "2 waiting: none healthy · ready in " in card.inner_text()
    assert card.locator("[data-eta]").get_attribute("data-eta") == eta
    show(page, "instances")
    row = page.locator(f'#instance-table tr[data-instance="{made["instances"][0]["id"]}"] .waiting')
    row.wait_for()
    assert "none healthy" in row.inner_text() and "ready in" in row.inner_text()
    show(page, "overview")
    bar = page.locator(f'.spread-row[data-provider="{down["name"]}"]')
    bar.wait_for()
    assert bar.get_attribute("data-scale") == "4" and "0 / 4" in bar.inner_text()
    show(page, "providers")
    times = page.locator(f'tr[data-provider="{down["name"]}"] .launch-times')
    assert times.inner_text() == "launch times: not measured yet"


def test_a_warm_pool_is_set_shown_and_removed_on_the_overview(page, admin_api, provider):
    sign_in(page, ADMIN_KEY)
    show(page, "overview")
    form = page.locator("#pool-form")
    form.get_by_label("Label").select_option("ubuntu-small")
    form.get_by_label("Keep ready").fill("2")
    form.get_by_label("Idle limit (min)").fill("45")
    form.get_by_role("button", name="Set pool").click()
    row = page.locator('tr[data-pool="ubuntu-small"]')
    # Its only provider is down: the pool waits for room, and says so as 0 of 2.
    expect(row).to_contain_text("0/2 ready")
    expect(row).to_contain_text("45 min")
    assert admin_api.get("/pools/ubuntu-small").json()["max_idle_minutes"] == 45
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Remove").click()
    row.wait_for(state="detached")
    assert admin_api.get("/pools/ubuntu-small").status_code == 404
    assert page.console.unexpected() == []


def test_a_scheduled_request_shows_its_start_and_admission(page, admin_api, user_api):
    label = unique("lbl")
    register_down(admin_api, labels={label: sim_label()}, max_instances=1)
    start_at = timeutil.in_minutes(120)
    made = user_api.post("/requests", json={"label": label, "count": 2, "start_at": start_at}).json()
    sign_in(page, ADMIN_KEY)
    show(page, "requests")
    line = page.locator(f'[data-request="{made["id"]}"] .schedule')
    line.wait_for()
    assert line.locator("[data-expires]").get_attribute("data-expires") == start_at
    assert "at risk: needs 2; " in line.inner_text() and "room for 1 of 1 slots" in line.inner_text()
    user_api.delete(f"/requests/{made['id']}")
