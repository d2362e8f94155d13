// OpenMultiStack dashboard: plain JavaScript against the REST API, no build step.
// Every value from the API reaches the page as text (textContent / text nodes), never as HTML.
"use strict";

const KEY = "oms.apiKey";
const VIEWS = ["overview", "providers", "requests", "instances"];
const STATES = ["PENDING", "LAUNCHING", "BUILDING", "ACTIVE", "DELETING", "DELETED", "FAILED"];
const LIVE = ["PENDING", "LAUNCHING", "BUILDING", "ACTIVE", "DELETING"];
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const POLL_MS = 2000;
const REQUESTS_SHOWN = 50; // the newest requests, in the requests view and the instance filter

const state = {
  me: null, providers: [], requests: [], instances: [], live: [], timer: null, busy: false, again: false, rendered: {},
};
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// --- small helpers --------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "style") Object.assign(el.style, value); // through CSSOM: the CSP forbids style="..."
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

// A notice says what just happened, and fades once that is old news; an error stays until the
// next message, since it asks for something to be done.
const NOTICE_MS = 6000;
const FADE_MS = 1000;
let noticeTimer = null;

function say(message, isError = false) {
  const status = $("#status");
  clearTimeout(noticeTimer);
  status.textContent = message;
  status.classList.toggle("error", isError);
  status.classList.remove("fading");
  if (!message || isError) return;
  noticeTimer = setTimeout(() => {
    status.classList.add("fading");
    noticeTimer = setTimeout(() => say(""), FADE_MS);
  }, NOTICE_MS);
}

function ago(ts, suffix = " ago") {
  if (!ts) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (seconds < 60) return `${seconds} s${suffix}`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min${suffix}`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min${suffix}`;
}

function countdown(ts) {
  if (!ts) return "";
  const seconds = Math.round((Date.parse(ts) - Date.now()) / 1000);
  if (seconds <= 0) return "expired";
  const m = Math.floor(seconds / 60), s = String(seconds % 60).padStart(2, "0");
  return m >= 60 ? `in ${Math.floor(m / 60)} h ${m % 60} min` : `in ${m}:${s}`;
}

function timer(ts) {
  return h("span", { "data-expires": ts, title: ts || "" }, countdown(ts));
}

function since(ts, suffix = " ago") {
  return h("span", { "data-since": ts || "", "data-suffix": suffix, title: ts || "" }, ago(ts, suffix));
}

function tick() {
  // Times move on between polls even when the data does not: these are redrawn every second.
  for (const el of $$("[data-expires]")) el.textContent = countdown(el.dataset.expires);
  for (const el of $$("[data-since]")) el.textContent = ago(el.dataset.since || null, el.dataset.suffix);
  for (const el of $$("[data-eta]")) el.textContent = countdown(el.dataset.eta) === "expired" ? "any moment" : countdown(el.dataset.eta);
}

function bar(value, max, label) {
  const share = max > 0 ? Math.min(100, (100 * value) / max) : 0;
  return h("div", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": max, "aria-valuenow": value, "aria-label": label },
    h("span", { class: value > max ? "over" : "", style: { width: `${share}%` } }));
}

function badge(text) {
  return h("span", { class: `badge ${text}` }, text);
}

const isAdmin = () => state.me && state.me.role === "admin";

// --- the API ----------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    return { ok: false, status: 0, data: { error: { message: `the API did not answer (${error.message})` } } };
  }
  let data = null;
  if (response.status !== 204) {
    try { data = await response.json(); } catch { data = null; }
  }
  if (response.status === 401 && state.me) signOut("The API no longer accepts this key: sign in again.");
  return { ok: response.ok, status: response.status, data };
}

async function latest(path, limit) {
  // The first page only (each request in it costs the API a query for its instances).
  const answer = await api("GET", `${path}?limit=${limit}`);
  if (!answer.ok) throw new Error(errorText(answer));
  return answer.data.items;
}

async function all(path, pages = 10) {
  // Every item of a list, following `next` (at most `pages` pages of 500).
  const items = [];
  let cursor = null;
  for (let page = 0; page < pages; page++) {
    const joiner = path.includes("?") ? "&" : "?";
    const url = `${path}${joiner}limit=500${cursor ? `&next=${encodeURIComponent(cursor)}` : ""}`;
    const answer = await api("GET", url);
    if (!answer.ok) throw new Error(errorText(answer));
    items.push(...answer.data.items);
    cursor = answer.data.next;
    if (!cursor) break;
  }
  return items;
}

function errorText(answer) {
  const error = answer.data && answer.data.error;
  return error ? error.message : `the API answered ${answer.status}`;
}

function token() {
  // A client token for a retry-safe POST (crypto.randomUUID exists on secure origins only).
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function showErrors(form, answer) {
  clearErrors(form);
  const error = (answer.data && answer.data.error) || { message: `the API answered ${answer.status}` };
  const field = (error.field || "").split(/[.[]/)[0];
  const slot = $(`[data-error-for="${field}"]`, form) || $('[data-error-for="_form"]', form);
  if (slot) slot.textContent = error.message;
  else say(error.message, true);
  const input = field && form.elements[field];
  if (input && input.focus) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

function clearErrors(form) {
  for (const slot of $$("[data-error-for]", form)) slot.textContent = "";
  for (const input of $$("[aria-invalid]", form)) input.removeAttribute("aria-invalid");
}

// --- signing in and out -------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  sessionStorage.setItem(KEY, form.elements.key.value.trim());
  const answer = await api("GET", "me");
  if (!answer.ok) {
    sessionStorage.removeItem(KEY);
    showErrors(form, answer.status === 401 ? { data: { error: { message: "This key is not accepted.", field: "key" } } } : answer);
    return;
  }
  form.reset();
  start(answer.data);
}

function start(me) {
  state.me = me;
  document.body.classList.toggle("admin", me.role === "admin");
  $("#who-name").textContent = `${me.name} (${me.role})`;
  $("#sign-in").hidden = true;
  $("#nav").hidden = $("#who").hidden = false;
  for (const el of $$(".admin-only")) el.hidden = me.role !== "admin";
  say("");
  route();
  clearInterval(state.timer);
  state.timer = setInterval(() => { refresh(); }, POLL_MS);
}

function signOut(message = "Signed out.") {
  sessionStorage.removeItem(KEY);
  clearInterval(state.timer);
  Object.assign(state, { me: null, providers: [], requests: [], instances: [], live: [], rendered: {} });
  for (const view of VIEWS) $(`#${view}`).hidden = true;
  // Nothing of this key's may show to the next one, not even for a moment.
  for (const part of ["#state-totals", "#spread", "#provider-table tbody", "#request-list", "#instance-table tbody"]) {
    $(part).replaceChildren();
  }
  for (const select of $$("select")) select.replaceChildren();
  resetProviderForm();
  $("#request-form").reset();
  $("#nav").hidden = $("#who").hidden = true;
  $("#sign-in").hidden = false;
  say(message);
}

// --- routing and polling ---------------------------------------------------------------------

function currentView() {
  const name = location.hash.slice(1);
  return VIEWS.includes(name) ? name : "overview";
}

function route() {
  if (!state.me) return;
  const view = currentView();
  for (const name of VIEWS) $(`#${name}`).hidden = name !== view;
  window.scrollTo(0, 0); // a hash names a section: the browser would scroll the header away
  for (const link of $$("#nav a")) {
    if (link.getAttribute("href") === `#${view}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  refresh();
}

async function refresh() {
  if (!state.me || document.hidden) return;
  if (state.busy) {
    state.again = true; // asked for during a refresh (a new view, a new filter): run once more after it
    return;
  }
  state.busy = true;
  try {
    const view = currentView();
    state.providers = await all("providers");
    if (view === "overview") {
      state.live = (await Promise.all(LIVE.concat("FAILED").map((s) => all(`instances?state=${s}`)))).flat();
      state.pools = await all("pools");
      renderOverview();
      renderPools();
    } else if (view === "providers") {
      renderProviders();
    } else if (view === "requests") {
      state.requests = await latest("requests", REQUESTS_SHOWN);
      renderLabelChoices();
      renderRequests();
    } else {
      state.requests = await latest("requests", REQUESTS_SHOWN);
      renderFilterChoices();
      state.instances = await all(`instances${filterQuery()}`, 2);
      renderInstances();
    }
  } catch (error) {
    if (state.me) say(`Could not refresh: ${error.message}`, true);
  } finally {
    state.busy = false;
    if (state.again) {
      state.again = false;
      refresh();
    }
  }
}

function changed(name, data) {
  // Re-render a part only when its data changed, so focus and open rows survive a poll.
  const text = JSON.stringify(data);
  if (state.rendered[name] === text) return false;
  state.rendered[name] = text;
  return true;
}

// --- overview ---------------------------------------------------------------------------

function renderOverview() {
  const counts = Object.fromEntries(LIVE.concat("FAILED").map((s) => [s, 0]));
  for (const instance of state.live) counts[instance.state] += 1;
  const byProvider = new Map(state.providers.map((p) => [p.name, Object.fromEntries(LIVE.map((s) => [s, 0]))]));
  for (const instance of state.live) {
    if (!LIVE.includes(instance.state)) continue;
    const name = instance.provider || "(not placed yet)";
    if (!byProvider.has(name)) byProvider.set(name, Object.fromEntries(LIVE.map((s) => [s, 0])));
    byProvider.get(name)[instance.state] += 1;
  }
  if (!changed("overview", [counts, [...byProvider], state.providers.map((p) => p.capacity)])) return;
  const live = LIVE.reduce((sum, s) => sum + counts[s], 0);
  $("#state-totals").replaceChildren(
    h("div", { class: "total" }, h("strong", {}, String(live)), "live"),
    ...LIVE.concat("FAILED").map((s) => h("div", { class: "total", "data-state": s }, h("strong", {}, String(counts[s])), badge(s))),
  );
  // Each provider's bar is scaled to its own cap (max_instances lowered by the real quota): a full
  // account reads full whatever the other rows hold. Instances not placed yet fill their own row.
  const caps = new Map(state.providers.map((p) => [p.name, capOf(p)]));
  const rows = [...byProvider].map(([name, c]) => {
    const total = LIVE.reduce((n, s) => n + c[s], 0);
    const cap = caps.get(name);
    const scale = Math.max(1, cap === undefined ? total : Math.max(cap, total));
    const segments = LIVE.filter((s) => c[s]).map((s) => h("span", { class: `seg-${s}`, style: { width: `${(100 * c[s]) / scale}%` }, title: `${c[s]} ${s}` }));
    const summary = LIVE.filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(", ") || "none";
    return h("div", { class: "spread-row", "data-provider": name, "data-scale": String(scale) },
      h("span", {}, name),
      h("div", { class: "stack", role: "img", "aria-label": `${name}: ${summary}` }, segments),
      h("span", { class: "small" }, cap !== undefined ? `${total} / ${cap}` : String(total)));
  });
  const legend = h("div", { class: "legend" }, LIVE.map((s) => h("span", {}, h("i", { class: `seg-${s}` }), s)));
  $("#spread").replaceChildren(...(rows.length ? rows : [h("p", {}, "No providers yet.")]), legend);
}

// Warm pools: each label's target now (its schedule applied), what is ready and booting.
function renderPools() {
  const labels = offeredLabels();
  const select = $("#pl-label");
  if (!select.matches(":focus") && changed("pool-labels", labels)) fillSelect(select, labels);
  if (!changed("pools", state.pools)) return;
  const days = (d) => (d.length > 2 && DAYS.indexOf(d[d.length - 1]) - DAYS.indexOf(d[0]) + 1 === d.length ? `${d[0]}-${d[d.length - 1]}` : d.join(","));
  const rows = state.pools.map((p) => h("tr", { "data-pool": p.label },
    h("td", {}, p.label),
    h("td", {}, bar(p.counts.ready, Math.max(1, p.target), `${p.label}: ${p.counts.ready} of ${p.target} ready`),
      h("div", { class: "small" }, `${p.counts.ready}/${p.target} ready`, p.counts.booting + p.counts.pending ? ` · ${p.counts.booting + p.counts.pending} booting` : "")),
    h("td", { class: "small" }, `${p.min_ready} by default`,
      ...p.schedule.map((w) => h("div", {}, `${days(w.days)} ${w.from}–${w.to}: ${w.min_ready}`)),
      p.schedule.length ? h("div", {}, `(${p.time_zone})`) : null,
      p.ssh_public_key ? h("div", {}, "own SSH key: requests with it (or none) take these") : null),
    h("td", {}, `${p.max_idle_minutes} min`),
    h("td", { class: "admin-only" }, h("button", { type: "button", class: "danger", onclick: () => deletePool(p.label) }, "Remove"))));
  $("#pool-table tbody").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 5 }, "No warm pools: every request boots its instances."))]));
}

async function savePool(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const label = form.elements.label.value;
  const answer = await api("PUT", `pools/${encodeURIComponent(label)}`, {
    min_ready: Number(form.elements.min_ready.value), max_idle_minutes: Number(form.elements.max_idle_minutes.value) });
  if (!answer.ok) {
    showErrors(form, answer);
    return;
  }
  say(`Pool ${label}: keeping ${answer.data.target} ready.`);
  state.rendered.pools = null;
  refresh();
}

async function deletePool(label) {
  if (!window.confirm(`Remove the warm pool of ${label}? Its idle instances are deleted.`)) return;
  const answer = await api("DELETE", `pools/${encodeURIComponent(label)}`);
  say(answer.ok ? `Removed pool ${label}.` : `Could not remove pool ${label}: ${errorText(answer)}`, !answer.ok);
  state.rendered.pools = null;
  refresh();
}

// --- providers ---------------------------------------------------------------------------

function capOf(p) {
  return p.capacity.quota_instances === null ? p.capacity.max_instances : Math.min(p.capacity.max_instances, p.capacity.quota_instances);
}

// "boot 2.1 s (p90 3.0) · ready 40.2 s (p90 95.0)": what launches there measured.
function launchTimes(t) {
  if (!t || !t.samples) return "launch times: not measured yet";
  return `boot ${t.boot_seconds.median} s (p90 ${t.boot_seconds.p90}) · ready ${t.ready_seconds.median} s (p90 ${t.ready_seconds.p90}) · ${t.samples} launches`;
}

// "2 waiting: all accounts full · ready in 4:10": why a request's instances wait, and until when.
function waitingText(w) {
  const reasons = Object.entries(w.reasons).map(([reason, n]) => Object.keys(w.reasons).length > 1 ? `${reason} (${n})` : reason).join(", ");
  return [`${w.count} waiting: ${reasons} · `, ...eta(w.ready_eta)];
}

function eta(ts) {
  return ts ? ["ready ", etaTimer(ts)] : ["no ETA yet"];
}

function etaTimer(ts) {
  return h("span", { class: "eta", "data-eta": ts, title: ts }, countdown(ts) === "expired" ? "any moment" : countdown(ts));
}

function renderProviders() {
  // A maintenance window being typed in is not wiped by a poll: the rows wait until it is added or emptied.
  if ($$(".maintenance-add input").some((input) => input.value)) return;
  if (!changed("providers", [state.providers, state.me.role])) return;
  const admin = isAdmin();
  $("#provider-table thead th:last-child").hidden = !admin;
  const rows = state.providers.map((p) => {
    const cap = capOf(p);
    const quota = p.capacity.quota_instances === null ? "quota unknown" : `real quota ${p.capacity.quota_instances}`;
    // Each limited resource's room (instances, cores, RAM, floating IPs, ports) as the last check read it.
    const rooms = Object.entries(p.capacity.rooms || {}).map(([name, r]) =>
      `${name} ${r.instances}` + (r.per_instance > 1 ? ` (${r.room} of ${r.limit})` : ""));
    const toggle = h("input", { type: "checkbox", "aria-label": `${p.name} enabled`, disabled: !admin, onchange: (e) => setEnabled(p.name, e.target.checked) });
    toggle.checked = p.enabled;
    return h("tr", { "data-provider": p.name },
      h("td", {}, h("strong", {}, p.name), admin ? h("div", { class: "small" }, p.auth_url) : null),
      h("td", {}, p.region || "—"),
      h("td", {}, p.health.maintenance ? badge("maintenance") : badge(p.health.state),
        p.health.maintenance ? h("div", { class: "small" }, "in maintenance until ", p.health.maintenance_until) : null,
        ...maintenanceView(p, admin),
        p.health.last_error ? h("div", { class: "small" }, since(p.health.last_error_at), ": ", p.health.last_error) : null,
        ...(p.problems || []).map((problem) => h("div", { class: "small problem" }, problem)),
        h("div", { class: "small" }, "checked ", since(p.health.checked_at)),
        admin && p.canary ? canaryView(p) : null),
      h("td", {}, bar(p.capacity.in_use, cap, `${p.name}: ${p.capacity.in_use} of ${cap} in use`),
        h("div", { class: "small" }, `${p.capacity.in_use} / ${cap} in use · max ${p.capacity.max_instances} · ${quota}`),
        rooms.length ? h("div", { class: "small rooms" }, `room: ${rooms.join(" · ")}`) : null,
        h("div", { class: "small launch-times" }, launchTimes(p.launch_times))),
      h("td", {}, p.priority === undefined ? "—" : String(p.priority)),
      h("td", {}, toggle),
      admin ? h("td", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => checkProvider(p.name) }, "Check now"),
        ...bootControls(p),
        h("button", { type: "button", class: "secondary", onclick: () => editProvider(p.name) }, "Edit"),
        h("button", { type: "button", class: "danger", onclick: () => deleteProvider(p.name) }, "Delete")) : null);
  });
  $("#provider-table tbody").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 7 }, "No providers yet."))]));
}

// Announced maintenance windows: shown on the row, added and removed there (the API takes the whole list).
function maintenanceView(p, admin) {
  const windows = (p.maintenance || []).map((w, n) =>
    h("div", { class: "small maintenance", "data-window": w.start },
      `maintenance ${w.start} → ${w.end}`, w.note ? ` · ${w.note}` : "",
      admin ? h("button", { type: "button", class: "secondary", "aria-label": `Remove maintenance window ${n + 1} of ${p.name}`,
        onclick: () => saveWindows(p.name, p.maintenance.filter((_, k) => k !== n), "removed") }, "remove") : null));
  if (!admin) return windows;
  const start = h("input", { type: "datetime-local", "aria-label": "Maintenance start", required: true });
  const end = h("input", { type: "datetime-local", "aria-label": "Maintenance end", required: true });
  const note = h("input", { type: "text", maxlength: 200, "aria-label": "Maintenance note", placeholder: "note" });
  const add = h("form", { class: "maintenance-add", onsubmit: (e) => {
    e.preventDefault();
    // The inputs are in the browser's time zone; the API takes UTC.
    const added = { start: new Date(start.value).toISOString(), end: new Date(end.value).toISOString(), note: note.value.trim() };
    saveWindows(p.name, [...(p.maintenance || []), added], "added", add);
  } }, start, end, note, h("button", { type: "submit", class: "secondary" }, "Add window"));
  return [...windows, h("details", { class: "small" }, h("summary", {}, "Maintenance window…"), add)];
}

async function saveWindows(name, maintenance, what, form) {
  const answer = await api("PATCH", `providers/${encodeURIComponent(name)}`, { maintenance });
  if (answer.ok && form) form.reset();
  say(answer.ok ? `Maintenance window ${what} on ${name}.` : `Could not change ${name}'s maintenance: ${errorText(answer)}`, !answer.ok);
  state.rendered.providers = null;
  refresh();
}

async function setEnabled(name, enabled) {
  const answer = await api("PATCH", `providers/${encodeURIComponent(name)}`, { enabled });
  say(answer.ok ? `${name} ${enabled ? "enabled" : "disabled"}.` : `Could not change ${name}: ${errorText(answer)}`, !answer.ok);
  state.rendered.providers = null;
  refresh();
}

async function checkProvider(name) {
  say(`Checking ${name}…`);
  const answer = await api("POST", `providers/${encodeURIComponent(name)}/check`, {});
  say(answer.ok ? `${name} is ${answer.data.health.state}.` : `Could not check ${name}: ${errorText(answer)}`, !answer.ok);
  refresh();
}

// A canary boot: one server of a label, followed through every step, then deleted.
const openCanaries = new Set(); // providers whose steps are shown: kept open across polls

function bootControls(p) {
  const labels = Object.keys(p.labels || {}).sort();
  if (!labels.length) return [];
  const pick = h("select", { "aria-label": `label to boot on ${p.name}`, hidden: labels.length === 1 },
    ...labels.map((label) => h("option", { value: label }, label)));
  pick.value = p.canary_label && labels.includes(p.canary_label) ? p.canary_label : labels[0];
  const running = p.canary && p.canary.state === "running";
  return [pick, h("button", { type: "button", class: "secondary", disabled: running,
    title: "Create one server, follow it through every step (ACTIVE, floating IP, SSH, host keys), then delete it",
    onclick: () => bootCanary(p.name, pick.value) }, running ? "Test boot running…" : "Boot a test instance")];
}

function canaryView(p) {
  const c = p.canary;
  const last = c.steps.length ? c.steps[c.steps.length - 1].step : "starting";
  const headline = c.state === "running" ? `Test boot of ${c.label}: running (${last} done)`
    : c.state === "passed" ? `Test boot of ${c.label}: passed in ${c.seconds.toFixed(1)} s`
      : `Test boot of ${c.label}: failed at ${c.failed_step}`;
  const result = (ok) => (ok === true ? "ok" : ok === false ? "failed" : "skipped");
  const steps = h("table", { class: "canary-steps" },
    h("thead", {}, h("tr", {}, h("th", {}, "Step"), h("th", {}, "Result"), h("th", {}, "Time"), h("th", {}, "Detail"))),
    h("tbody", {}, c.steps.map((s) => h("tr", { "data-step": s.step, "data-ok": result(s.ok) },
      h("td", {}, s.step), h("td", {}, result(s.ok)), h("td", {}, `${s.seconds.toFixed(2)} s`), h("td", {}, s.detail)))));
  const view = h("details", { class: "canary small", "data-canary": c.state },
    h("summary", {}, headline, " ", since(c.finished_at || c.started_at)),
    c.error ? h("div", { class: "problem" }, c.error) : null, steps);
  view.open = openCanaries.has(p.name);
  view.addEventListener("toggle", () => (view.open ? openCanaries.add(p.name) : openCanaries.delete(p.name)));
  return view;
}

async function bootCanary(name, label) {
  const answer = await api("POST", `providers/${encodeURIComponent(name)}/check`, { boot: label });
  if (answer.ok) openCanaries.add(name);
  say(answer.ok ? `Booting a test instance of ${label} on ${name}…` : `Could not boot on ${name}: ${errorText(answer)}`, !answer.ok);
  state.rendered.providers = null;
  refresh();
}

async function deleteProvider(name) {
  if (!window.confirm(`Delete provider ${name}? Its credentials are deleted too.`)) return;
  const answer = await api("DELETE", `providers/${encodeURIComponent(name)}`);
  say(answer.ok ? `Provider ${name} deleted.` : `Could not delete ${name}: ${errorText(answer)}`, !answer.ok);
  refresh();
}

// An image or flavor may be chosen by properties or a minimum (an object): edited as JSON.
const asText = (value) => (value && typeof value === "object" ? JSON.stringify(value) : value);
function asValue(text) {
  if (!text.startsWith("{")) return text;
  try { return JSON.parse(text); } catch { return text; }
}

function labelRow(label = "", mapping = {}) {
  const field = (name, text, value) => h("div", {}, h("label", {}, text, h("input", { name: `l-${name}`, value: asText(value) || "" })));
  const ready = h("select", { name: "l-ready" },
    h("option", { value: "active" }, "when Nova says ACTIVE"), h("option", { value: "ssh" }, "when SSH answers"));
  // A new label is ready once SSH answers; one stored before that default has no `ready` and is `active`.
  ready.value = mapping.ready || (label ? "active" : "ssh");
  // Settings the form has no field for (security groups, SSH port) are kept as they were.
  return h("div", { class: "label-row", "data-mapping": JSON.stringify(mapping) },
    field("label", "Label", label), field("image", "Image", mapping.image), field("flavor", "Flavor", mapping.flavor),
    field("network", "Network (optional)", mapping.network),
    h("div", {}, h("label", {}, "Ready", ready)),
    h("button", { type: "button", class: "danger", onclick: (e) => e.target.closest(".label-row").remove() }, "Remove"));
}

function setAuthType(form, kind) {
  for (const radio of $$('input[name="auth_type"]', form)) radio.checked = radio.value === kind;
  for (const group of $$("[data-auth]", form)) group.hidden = group.dataset.auth !== kind;
}

function resetProviderForm() {
  const form = $("#provider-form");
  form.reset();
  clearErrors(form);
  form.elements.mode.value = "add";
  form.elements.name.readOnly = false;
  $("#provider-form-title").textContent = "Add a provider";
  $("#provider-submit").textContent = "Add provider";
  $("#provider-cancel").hidden = $("#secret-hint").hidden = true;
  setAuthType(form, "password");
  $("#label-rows").replaceChildren(labelRow());
}

function editProvider(name) {
  const p = state.providers.find((x) => x.name === name);
  if (!p) return;
  resetProviderForm();
  const form = $("#provider-form");
  form.elements.mode.value = "edit";
  for (const key of ["name", "auth_url", "region", "username", "project_name", "project_id", "user_domain_name",
    "project_domain_name", "application_credential_id", "max_instances", "priority", "floating_ip",
    "floating_network", "ssh_security_group", "address_family", "boot_timeout_seconds", "rate_limit_per_second",
    "max_concurrent_creates"]) {
    if (form.elements[key]) form.elements[key].value = p[key] === null || p[key] === undefined ? "" : p[key];
  }
  form.elements.enabled.checked = p.enabled;
  form.elements.multipart_user_data.checked = p.multipart_user_data;
  form.elements.name.readOnly = true;
  setAuthType(form, p.auth_type);
  $("#label-rows").replaceChildren(...Object.entries(p.labels).map(([l, m]) => labelRow(l, m)), ...(Object.keys(p.labels).length ? [] : [labelRow()]));
  $("#provider-form-title").textContent = `Edit provider ${name}`;
  $("#provider-submit").textContent = "Save changes";
  $("#provider-cancel").hidden = $("#secret-hint").hidden = false;
  form.scrollIntoView({ behavior: "smooth" });
  form.elements.auth_url.focus();
}

function providerBody(form) {
  const editing = form.elements.mode.value === "edit";
  const value = (name) => form.elements[name].value.trim();
  const kind = $('input[name="auth_type"]:checked', form).value;
  const body = { name: value("name"), auth_url: value("auth_url"), enabled: form.elements.enabled.checked };
  for (const name of ["max_instances", "priority", "boot_timeout_seconds", "rate_limit_per_second",
    "max_concurrent_creates"]) {
    // An empty number is the default (null in an edit), never Number("") = 0.
    if (value(name)) body[name] = Number(value(name));
    else if (editing) body[name] = null;
  }
  body.floating_ip = form.elements.floating_ip.value;
  body.address_family = form.elements.address_family.value;
  body.multipart_user_data = form.elements.multipart_user_data.checked;
  const optional = ["region", "user_domain_name", "project_domain_name", "floating_network", "ssh_security_group"];
  optional.push(...(kind === "password" ? ["username", "project_name", "project_id"] : ["application_credential_id"]));
  for (const name of optional) {
    if (value(name)) body[name] = value(name);
    else if (editing) body[name] = null;
  }
  const secret = kind === "password" ? "password" : "application_credential_secret";
  if (form.elements[secret].value) body[secret] = form.elements[secret].value;
  const labels = {};
  for (const row of $$(".label-row", form)) {
    const get = (n) => $(`[name="l-${n}"]`, row).value.trim();
    if (!get("label")) continue;
    const { network: _network, ...kept } = JSON.parse(row.dataset.mapping || "{}");
    labels[get("label")] = { ...kept, image: asValue(get("image")), flavor: asValue(get("flavor")), ready: get("ready"),
      ...(get("network") ? { network: get("network") } : {}) };
  }
  body.labels = labels;
  if (editing) delete body.name;
  return body;
}

async function saveProvider(event) {
  event.preventDefault();
  const form = event.target;
  const editing = form.elements.mode.value === "edit";
  const name = form.elements.name.value.trim();
  const answer = editing
    ? await api("PATCH", `providers/${encodeURIComponent(name)}`, providerBody(form))
    : await api("POST", "providers", providerBody(form));
  if (!answer.ok) {
    showErrors(form, answer);
    return;
  }
  say(editing ? `Provider ${name} saved.` : `Provider ${name} added.`);
  resetProviderForm();
  state.rendered.providers = null;
  refresh();
}

// --- requests ----------------------------------------------------------------------------

function offeredLabels() {
  return [...new Set(state.providers.filter((p) => p.enabled).flatMap((p) => Object.keys(p.labels)))].sort();
}

function fillSelect(select, options, allText) {
  const before = select.value;
  const items = (allText ? [["", allText]] : []).concat(options.map((o) => (Array.isArray(o) ? o : [o, o])));
  if (changed(`select-${select.id}`, items)) {
    select.replaceChildren(...items.map(([value, text]) => h("option", { value }, text)));
  }
  if (items.some(([value]) => value === before)) select.value = before;
}

function renderLabelChoices() {
  const labels = offeredLabels();
  const select = $("#rf-label");
  fillSelect(select, labels.length ? labels : [["", "no provider offers a label yet"]]);
}

function renderRequests() {
  if (!changed("requests", state.requests)) return;
  const items = state.requests.map((r) => {
    const active = r.counts.ACTIVE;
    const others = STATES.filter((s) => s !== "ACTIVE" && r.counts[s]).map((s) => `${r.counts[s]} ${s}`).join(", ");
    const over = ["deleting", "deleted"].includes(r.state);
    return h("li", { class: "card", "data-request": r.id },
      h("div", {}, h("strong", {}, `${r.label} × ${r.count}`), " ", badge(r.state),
        h("div", { class: "meta" }, r.id, r.expires_at && !over ? [" · expires ", timer(r.expires_at)] : null)),
      h("div", { class: "buttons" }, over ? null : [
        h("button", { type: "button", class: "secondary", onclick: () => extendRequest(r.id) }, "Extend 30 min"),
        h("button", { type: "button", class: "danger", onclick: () => deleteRequest(r.id) }, "Delete")]),
      bar(active, r.count, `${r.id}: ${active} of ${r.count} ACTIVE`),
      h("div", { class: "meta progress" }, `${active}/${r.count} ACTIVE`, others ? ` · ${others}` : "",
        pooled(r) ? ` · ${pooled(r)} from the warm pool` : ""),
      r.waiting ? h("div", { class: "meta waiting" }, ...waitingText(r.waiting)) : null,
      r.state === "scheduled" ? scheduledLine(r) : null);
  });
  $("#request-list").replaceChildren(...(items.length ? items : [h("li", {}, "No requests yet.")]));
}

const pooled = (r) => r.instances.filter((i) => i.pooled_at).length;

// "starts in 1:59:40 · at risk: needs 3; at ... room for 1 ...": a scheduled request's start and forecast.
function scheduledLine(r) {
  const a = r.admission;
  return h("div", { class: "meta schedule" }, "starts ", timer(r.start_at),
    a ? h("span", { class: `admission ${a.status}`, title: a.reason }, ` · ${a.status.replace("_", " ")}: ${a.reason}`) : null);
}

async function submitRequest(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const body = { label: form.elements.label.value, count: Number(form.elements.count.value),
    lifetime_minutes: Number(form.elements.lifetime_minutes.value), client_token: token() };
  const key = form.elements.ssh_public_key.value.trim();
  if (key) body.ssh_public_key = key;
  const answer = await api("POST", "requests", body);
  if (!answer.ok) {
    showErrors(form, answer);
    return;
  }
  say(`Requested ${answer.data.count} × ${answer.data.label} (${answer.data.id}).`);
  form.elements.ssh_public_key.value = "";
  state.rendered.requests = null;
  refresh();
}

async function extendRequest(id) {
  const answer = await api("POST", `requests/${encodeURIComponent(id)}/extend`, { minutes: 30 });
  const warnings = answer.ok ? (answer.data.warnings || []).map((w) => ` Warning: ${w.message}.`).join("") : "";
  say(answer.ok ? `${id} now expires ${countdown(answer.data.expires_at)}.${warnings}` : `Could not extend ${id}: ${errorText(answer)}`, !answer.ok || warnings !== "");
  refresh();
}

async function deleteRequest(id) {
  if (!window.confirm(`Delete request ${id} and all its instances?`)) return;
  const answer = await api("DELETE", `requests/${encodeURIComponent(id)}`);
  say(answer.ok ? `Deleting ${id}.` : `Could not delete ${id}: ${errorText(answer)}`, !answer.ok);
  refresh();
}

// --- instances ---------------------------------------------------------------------------

function renderFilterChoices() {
  fillSelect($("#if-state"), STATES, "All states");
  fillSelect($("#if-provider"), state.providers.map((p) => p.name), "All providers");
  fillSelect($("#if-request"), state.requests.map((r) => [r.id, `${r.id} (${r.label} × ${r.count})`]), "All requests");
  fillSelect($("#if-label"), [...new Set(state.providers.flatMap((p) => Object.keys(p.labels)))].sort(), "All labels");
}

function filterQuery() {
  const form = $("#instance-filters");
  const params = new URLSearchParams();
  for (const name of ["state", "provider", "request_id", "label"]) {
    if (form.elements[name].value) params.set(name, form.elements[name].value);
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

function address(ip) {
  return h("span", { class: "addr" }, ip,
    h("button", { type: "button", class: "secondary", "aria-label": `Copy ${ip}`, onclick: () => copy(ip) }, "Copy"));
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    say(`Copied ${text}.`);
  } catch {
    say(`Copy ${text} by hand: the browser did not allow it.`, true);
  }
}

function renderInstances() {
  if (!changed("instances", state.instances)) return;
  const open = new Set($$("#instance-table details[open]").map((d) => d.dataset.instance));
  const rows = state.instances.map((i) => {
    // The address to SSH to first (the service chose it by type and family), then the others.
    const ips = [...new Set([i.access_ip, ...i.addresses.ipv4, ...i.addresses.ipv6].filter(Boolean))];
    const attempts = i.attempts.length
      ? h("details", { "data-instance": i.id, open: open.has(i.id) },
        h("summary", {}, `${i.attempts.length} attempt${i.attempts.length > 1 ? "s" : ""}`),
        h("ol", { class: "attempts" }, i.attempts.map((a) => h("li", {}, `${a.provider}: ${a.error} — ${a.message} (${ago(a.at)})`))))
      : "—";
    return h("tr", { "data-instance": i.id, "data-state": i.state },
      h("td", {}, i.name, h("div", { class: "small" }, i.id)),
      h("td", {}, badge(i.state), i.failure_reason ? h("div", { class: "small" }, i.failure_reason) : null,
        i.waiting ? h("div", { class: "small waiting" }, i.waiting.reason, " · ", ...eta(i.waiting.eta)) : null),
      h("td", {}, i.provider || "—"),
      h("td", {}, ips.length ? ips.map(address) : "—"),
      h("td", {}, since(i.created_at, "")),
      h("td", {}, ["DELETED", "FAILED"].includes(i.state) ? "—" : timer(i.expires_at)),
      h("td", {}, attempts));
  });
  $("#instance-table tbody").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 7 }, "No instances match."))]));
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut());
  $("#provider-form").addEventListener("submit", saveProvider);
  $("#provider-cancel").addEventListener("click", resetProviderForm);
  $("#add-label-row").addEventListener("click", () => $("#label-rows").append(labelRow()));
  for (const radio of $$('input[name="auth_type"]')) radio.addEventListener("change", (e) => setAuthType($("#provider-form"), e.target.value));
  $("#request-form").addEventListener("submit", submitRequest);
  $("#pool-form").addEventListener("submit", savePool);
  $("#instance-filters").addEventListener("change", () => { state.rendered.instances = null; refresh(); });
  window.addEventListener("hashchange", route);
  setInterval(tick, 1000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  resetProviderForm();
}

async function resume() {
  wire();
  if (!sessionStorage.getItem(KEY)) return;
  const answer = await api("GET", "me");
  if (answer.ok) start(answer.data);
  else signOut("Sign in again.");
}

resume();
