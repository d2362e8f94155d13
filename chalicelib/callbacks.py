"""Callbacks: signed events POSTed to a request's `callback_url`, at least once.

Events: `ready` (every instance ACTIVE), `failed` (the request can get no further: nothing on the
way and not all ACTIVE, an instance FAILED) and `expiring` (`OMS_CALLBACK_EXPIRING_MINUTES` before
the request ends; again after an extension moves its end). Each is raised once: its id is derived
from the request, the type (and for `expiring` the end it warns of), and it is written onto the
request item with a condition that no event of that id is there yet, so the stream handler and the
sweeper may both notice the same condition. The stored body is what every try sends, byte for byte.

Delivery state lives on the request item (`callbacks`, `callback_due_at`), never only in memory:
the stream handler tries an event right after raising it (one short try), the sweeper tries again
whatever is due (backoff 1 s doubling, capped at 5 minutes, at most `OMS_CALLBACK_MAX_TRIES`).

SSRF: a URL is checked when the request is made and again at each delivery, which connects to the
very address it checked (DNS may change in between) and follows no redirect; see `check_url`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import timedelta
from urllib.parse import urlsplit

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib import credentials, models, schemas, timeutil
from chalicelib.errors import invalid
from chalicelib.settings import settings

log = logging.getLogger("oms.callbacks")

READY, FAILED, EXPIRING = "ready", "failed", "expiring"
EVENT_TYPES = (READY, FAILED, EXPIRING)
PENDING, DELIVERED, GAVE_UP = "pending", "delivered", "failed"
SIGNATURE_HEADER, TIMESTAMP_HEADER, EVENT_HEADER = "X-OMS-Signature", "X-OMS-Timestamp", "X-OMS-Event-Id"
MAX_BACKOFF_SECONDS = 300
# Names that may reach loopback on the local stack; any other name resolving there is refused.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="callbacks")


# --- the URL rule ------------------------------------------------------------------------------


class Refused(ValueError):
    """A callback URL we will not call, and why."""


def loopback_allowed() -> bool:
    return settings.callback_allow_loopback


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            return _public(embedded)
    return address.is_global and not (address.is_multicast or address.is_link_local or address.is_reserved)


def resolve(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, address to connect to) for a URL we may call, or `Refused`.

    The rule: https only, to a host every one of whose addresses is public (`is_global`: not
    private, loopback, link-local 169.254/16 and fe80::/10 (cloud metadata), CGNAT 100.64/10,
    unspecified, reserved, multicast; IPv6 forms embedding IPv4 (::ffff:a.b.c.d, 6to4, Teredo)
    are judged by that IPv4). Exception, on the local stack only (OMS_AWS_ENDPOINT not set to ""
    as deployed stages set it, or OMS_CALLBACK_ALLOW_LOOPBACK=1): http or https to a host written
    literally 127.0.0.1, [::1] or localhost, connected at loopback.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise Refused(f"is not a valid URL: {error}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise Refused("must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not carry credentials")
    port = port or (443 if parts.scheme == "https" else 80)
    if host in LOOPBACK_NAMES and loopback_allowed():
        return parts.scheme, host, port, "::1" if host == "::1" else "127.0.0.1"
    if parts.scheme != "https":
        raise Refused("must be https (http only to 127.0.0.1, [::1] or localhost on the local stack)")
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        raise Refused(f"host {host} does not resolve") from None
    addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
    private = sorted(str(a) for a in addresses if not _public(a))
    if private or not addresses:
        raise Refused(f"host {host} resolves to an address that is not public ({', '.join(private)})")
    return parts.scheme, host, port, str(addresses[0])


def check_url(url: str, field: str = "callback_url") -> None:
    """400 naming the field when `url` is one we would not call."""
    try:
        resolve(url)
    except Refused as error:
        raise invalid(f"{field} {error}", field) from None


# --- signing -----------------------------------------------------------------------------------


def secret_for(key_id: str) -> str:
    """The callback signing secret of one API key: derived from the deployment's callback key (in
    Secrets Manager), so it is never stored and is the same wherever it is computed."""
    mac = hmac.new(credentials.callback_key(), b"callback-secret\0" + key_id.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body)."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# --- raising events ----------------------------------------------------------------------------


def events_of(request: models.Request) -> dict[str, dict]:
    """The request's events by id, as plain dicts."""
    return schemas.callback_events(request)


def event_id(request_id: str, event_type: str, detail: str = "") -> str:
    return "ev-" + hashlib.sha256(f"{request_id}\0{event_type}\0{detail}".encode()).hexdigest()[:24]


def _summary(request: models.Request, instances: list[models.Instance]) -> dict:
    counts = schemas.count_states(instances)
    return {
        "id": request.id,
        "label": request.label,
        "count": int(request.count),
        "state": schemas.request_state(int(request.count), counts, request.delete_requested),
        "counts": counts,
        "expires_at": request.expires_at,
        "instances": [
            {"id": i.id, "name": i.name, "state": i.state, "access_ip": i.access_ip, "provider": i.provider}
            for i in instances
        ],
    }


def raise_event(request: models.Request, instances: list[models.Instance], event_type: str, detail: str = "") -> bool:
    """Record one event on the request unless it is there already; True when this call raised it."""
    if not request.callback_url:
        return False
    eid = event_id(request.id, event_type, detail)
    if eid in events_of(request):
        return False
    now = timeutil.now_iso()
    body = {"id": eid, "type": event_type, "request_id": request.id, "at": now, "request": _summary(request, instances)}
    event = {
        "id": eid,
        "type": event_type,
        "state": PENDING,
        "tries": 0,
        "created_at": now,
        "next_try_at": now,
        "last_error": None,
        "delivered_at": None,
        "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
    }
    try:
        request.update(
            actions=[models.Request.callbacks[eid].set(event), *_due(now)],
            condition=models.Request.callbacks[eid].does_not_exist() & models.Request.callback_url.exists(),
        )
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return False
        raise
    return True


def notice(request_id: str) -> bool:
    """Raise `ready` or `failed` if the request has come to it; True when there may be an event to
    deliver (the request has a callback URL)."""
    try:
        request = models.Request.get(request_id, consistent_read=True)
    except DoesNotExist:
        return False
    if not request.callback_url:
        return False
    instances = list(models.Instance.by_request.query(request.id))
    state = schemas.request_state(int(request.count), schemas.count_states(instances), request.delete_requested)
    if state == schemas.REQUEST_READY and len(instances) == int(request.count):
        raise_event(request, instances, READY)
    elif state == schemas.REQUEST_FAILED:
        raise_event(request, instances, FAILED)
    return True


def notice_expiring(now: str | None = None) -> list[str]:
    """Raise `expiring` for live requests ending within OMS_CALLBACK_EXPIRING_MINUTES (found through
    the instances' state and expiry index, no scan); returns the request ids it raised it for."""
    now = now or timeutil.now_iso()
    horizon = timeutil.iso(timeutil.parse(now) + timedelta(minutes=settings.callback_expiring_minutes))
    request_ids: set[str] = set()
    for state in (models.PENDING, models.LAUNCHING, models.BUILDING, models.ACTIVE):
        for instance in models.Instance.by_state_expires.query(
            state, range_key_condition=models.Instance.expires_at.between(now, horizon)
        ):
            request_ids.add(instance.request_id)
    raised = []
    for request_id in sorted(request_ids):
        try:
            request = models.Request.get(request_id, consistent_read=True)
        except DoesNotExist:
            continue
        if not request.callback_url or request.delete_requested or not now < request.expires_at <= horizon:
            continue
        instances = list(models.Instance.by_request.query(request.id))
        if raise_event(request, instances, EXPIRING, request.expires_at):
            raised.append(request.id)
    return raised


# --- delivering --------------------------------------------------------------------------------


def backoff_seconds(tries: int) -> int:
    return min(MAX_BACKOFF_SECONDS, 2 ** max(0, tries - 1))


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to one checked address, with SNI and certificate checks for the URL's host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST to the URL at the address its check found (no redirect followed); the status."""
    scheme, host, port, address = resolve(url)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timeout = settings.callback_timeout_seconds
    if scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPS(host, address, port, timeout)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        host_header = f"[{host}]" if ":" in host else host
        default_port = 443 if scheme == "https" else 80
        connection.request(
            "POST",
            path,
            body=body,
            headers={
                "Host": host_header if port == default_port else f"{host_header}:{port}",
                "Content-Type": "application/json",
                "User-Agent": "OpenMultiStack-Callback/1",
                **headers,
            },
        )
        answer = connection.getresponse()
        answer.read(4096)
        return answer.status
    finally:
        connection.close()


def _try(url: str, secret: str, event: dict) -> str | None:
    """One delivery; None when the receiver took it (2xx), else what went wrong."""
    body = event["body"].encode()
    timestamp = str(int(timeutil.now().timestamp()))
    headers = {SIGNATURE_HEADER: sign(secret, timestamp, body), TIMESTAMP_HEADER: timestamp, EVENT_HEADER: event["id"]}
    try:
        status = post(url, body, headers)
    except Refused as error:
        return f"callback_url {error}"
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}: {error}"[:500]
    return None if 200 <= status < 300 else f"HTTP {status}"


def deliver_due(request_id: str) -> int:
    """Try each of the request's pending events that is due; returns how many were delivered."""
    try:
        request = models.Request.get(request_id, consistent_read=True)
    except DoesNotExist:
        return 0
    now = timeutil.now_iso()
    events = events_of(request)
    due = [e for e in events.values() if e["state"] == PENDING and e["next_try_at"] <= now]
    if not due or not request.callback_url:
        return 0
    secret = secret_for(request.owner)
    delivered = 0
    for event in sorted(due, key=lambda e: e["created_at"]):
        tries = int(event["tries"])
        if not _claim(request, event):
            continue  # another deliverer has it
        error = _try(request.callback_url, secret, event)
        after = timeutil.now_iso()
        event.update(tries=tries + 1, last_error=error)
        if error is None:
            event.update(state=DELIVERED, delivered_at=after)
            delivered += 1
        elif tries + 1 >= settings.callback_max_tries:
            event.update(state=GAVE_UP)
        else:
            at = timeutil.parse(after) + timedelta(seconds=backoff_seconds(tries + 1))
            event.update(next_try_at=timeutil.iso(at))
        events[event["id"]] = event
        pending = [e["next_try_at"] for e in events.values() if e["state"] == PENDING]
        due_actions = _due(min(pending) if pending else None)
        try:
            # Written only while no one else counted a try of it meanwhile (a duplicate delivery is
            # allowed, at least once; a lost count is not).
            request.update(
                actions=[models.Request.callbacks[event["id"]].set(event), *due_actions],
                condition=models.Request.callbacks[event["id"]]["tries"] == tries,
            )
        except UpdateError as failure:
            if not models.is_conditional_failure(failure):
                raise
        if error is not None:
            log.info("callback %s of %s: try %d failed: %s", event["id"], request.id, tries + 1, error)
    return delivered


def _claim(request: models.Request, event: dict) -> bool:
    """Hold one try of an event: its next_try_at moves past this try's timeout, written only while
    no one else counted or held a try of it, so two deliverers (the stream, the sweeper) do not
    both send it. A holder that dies leaves it due again once the hold has passed."""
    path = models.Request.callbacks[event["id"]]
    hold = timeutil.now() + timedelta(seconds=2 * settings.callback_timeout_seconds + 5)
    try:
        request.update(
            actions=[path["next_try_at"].set(timeutil.iso(hold))],
            condition=(path["tries"] == int(event["tries"])) & (path["next_try_at"] == event["next_try_at"]),
        )
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return False
        raise
    return True


def _due(at: str | None) -> list:
    """The actions that put the request in the sweeper's queue from `at` on, or take it out."""
    item = models.Request
    if at is None:
        return [item.callback_due_at.remove(), item.callback_queue.remove()]
    return [item.callback_due_at.set(at), item.callback_queue.set(models.CALLBACK_QUEUE)]


def deliver_pending(now: str | None = None) -> list[str]:
    """The sweeper's part: deliver every request's due events (through the sparse by_callback_due
    index: it holds only requests with an event pending); returns the ids of requests tried."""
    now = now or timeutil.now_iso()
    due = models.Request.callback_due_at <= now
    found = [r.id for r in models.Request.by_callback_due.query(models.CALLBACK_QUEUE, range_key_condition=due)]
    for request_id in found:
        try:
            deliver_due(request_id)
        except Exception:  # one request must not stop the others
            log.exception("callbacks of %s failed", request_id)
    return found


def sweep() -> dict[str, list[str]]:
    """The scheduled pass's callbacks phase: raise `expiring` where due, then deliver and retry."""
    return {"expiring": notice_expiring(), "tried": deliver_pending()}


def on_settled(request_ids: list[str], budget: float) -> list[str]:
    """The stream handler's part: raise ready/failed for these requests (durable writes, before the
    batch returns), then deliver beside the batch, waiting at most `budget` seconds; a delivery not
    done by then carries on, and one that fails (or never ran) is retried by the sweeper. Returns
    the requests whose events could not be raised (their records are worth a retry)."""
    started = time.monotonic()
    to_deliver, crashed = [], []
    for request_id in dict.fromkeys(request_ids):
        try:
            if notice(request_id):
                to_deliver.append(request_id)
        except Exception:  # one request must not stop the batch
            log.exception("callbacks of %s failed", request_id)
            crashed.append(request_id)
    jobs = [_pool.submit(_deliver_safely, r) for r in to_deliver]
    if jobs:
        wait(jobs, timeout=max(0.0, budget - (time.monotonic() - started)))
    return crashed


def _deliver_safely(request_id: str) -> None:
    try:
        deliver_due(request_id)
    except Exception:
        log.exception("callbacks of %s failed", request_id)
