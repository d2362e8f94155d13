"""The rate governor: how fast, and how many creates at once, we ask one provider account.

Clouds limit an account's request rate (OVH: 20 requests/s per project, Rackspace publishes
per-minute limits) and answer `429` with `Retry-After` when it is passed (an older Nova `413`
"overLimit"). That answer means "slow down", never "broken": it must not count on the provider's
health. Every HTTP request of `cloud`'s connections passes through `send` (installed on their
transport), governed as the provider whose operation runs in the thread (`call`, from
`cloud._operation`), so no call site meters itself.

What is exact and what is best effort (DESIGN.md, "Rate governor"):
- the rate (`rate_limit_per_second`) is a token bucket per process and provider: exact within a
  process, summed over processes that call the account at once;
- the creates under way at once (`max_concurrent_creates`) are a semaphore per process and
  provider, taken by the launcher: exact within a process, likewise summed;
- a `429` puts the whole account on hold: at once in this process, and through the provider
  item's `rate_limited_until` (one conditional write) for every process that reads the item
  after it, which a launch pass, a watcher and a sweep do when they start.
"""

from __future__ import annotations

import logging
import threading
import time
from email.utils import parsedate_to_datetime

from pynamodb.exceptions import UpdateError

from chalicelib import faults, models, telemetry
from chalicelib.settings import settings

log = logging.getLogger("oms.governor")

# Tries of one operation that meet a rate limit, beyond the first (each waits its Retry-After).
MAX_RETRIES = 5
# How long to hold back when a 429 does not say (OVH's says nothing).
DEFAULT_RETRY_AFTER = 1.0


class _Bucket:
    """Tokens at `rate` a second, at most a second's worth saved up (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def wait(self) -> float:
        """Seconds until the next token is ours, queued behind those already promised."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return max(0.0, (1 - self.tokens) / self.rate)


_lock = threading.Lock()
_buckets: dict[tuple[str, float], _Bucket] = {}
_held_until: dict[str, float] = {}  # provider -> time.monotonic() before which nobody calls it
_creating: dict[tuple[str, int], threading.Semaphore] = {}
_current = threading.local()  # the operation this thread runs: its provider and deadline


def creates(provider: models.Provider) -> threading.Semaphore:
    """The bound on this process's creates under way at `provider` at once."""
    size = int(provider.max_concurrent_creates or models.DEFAULT_CONCURRENT_CREATES)
    with _lock:
        return _creating.setdefault((provider.name, size), threading.Semaphore(size))


def call(provider: models.Provider, function, *args, **kwargs):
    """Run one operation with its HTTP requests governed as `provider`'s (`send`), all of them
    within OMS_RATE_LIMIT_WAIT_SECONDS of waiting. An operation inside another (a create
    resolving its label) shares the outer one's budget."""
    if getattr(_current, "provider", None) is not None:
        return function(provider, *args, **kwargs)
    _current.provider, _current.deadline = provider, time.monotonic() + settings.rate_limit_wait_seconds
    try:
        return function(provider, *args, **kwargs)
    finally:
        _current.provider = None


def send(send_now, request, **kwargs):
    """Send one HTTP request of the current operation in its turn (the transport's `send`, which
    `cloud` wraps with this for every connection: Keystone's requests, discovery and pages
    included). A rate limit is waited out and the same request sent again, at most MAX_RETRIES
    times: the service did not carry it out, so the operation keeps the progress it made. The
    last refusal goes back to openstacksdk, which raises it (classified RATE_LIMITED)."""
    provider = getattr(_current, "provider", None)
    if provider is None:
        return send_now(request, **kwargs)
    retries = 0
    while True:
        _wait_turn(provider, _current.deadline)
        response = send_now(request, **kwargs)
        wait = rate_limited(response)
        if wait is None or retries == MAX_RETRIES:
            return response
        hold(provider, wait)
        response.close()
        retries += 1


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (it may be a number or an HTTP date), if there is one."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def rate_limited(response) -> float | None:
    """Seconds to wait when the answer is a rate limit (429; an older Nova's 413 "overLimit",
    whose absolute-limit 413s say "quota" and are not), else None."""
    status = response.status_code
    if status == 413:
        text = response.content.lower()
        if b"quota" in text or not (b"overlimit" in text or "Retry-After" in response.headers):
            return None
    elif status != 429:
        return None
    seconds = retry_after(response.headers.get("Retry-After"))
    return DEFAULT_RETRY_AFTER if seconds is None else seconds


def _wait_turn(provider: models.Provider, deadline: float) -> None:
    """Sleep out the account's hold, then until a token is ours. Raises RATE_LIMITED instead when
    that would pass `deadline`: the caller then treats the account as busy, not broken."""
    with _lock:
        held = max(_held_until.get(provider.name, 0.0) - time.monotonic(), _shared_hold(provider))
    _sleep(provider, held, deadline)
    rate = float(provider.rate_limit_per_second or 0)
    if rate <= 0:
        return
    with _lock:
        bucket = _buckets.get((provider.name, rate))
        if bucket is None:
            bucket = _buckets[(provider.name, rate)] = _Bucket(rate)
        wait = bucket.wait()
        if time.monotonic() + wait > deadline:
            raise _too_long(provider, wait)
        bucket.tokens -= 1  # promised now, so the next caller queues behind it
    _sleep(provider, wait, deadline)


def _sleep(provider: models.Provider, seconds: float, deadline: float) -> None:
    if seconds <= 0:
        return
    if time.monotonic() + seconds > deadline:
        raise _too_long(provider, seconds)
    time.sleep(seconds)


def _too_long(provider: models.Provider, seconds: float) -> faults.CloudError:
    return faults.CloudError(
        faults.RATE_LIMITED,
        f"{provider.name} is rate limited: its next turn is {seconds:.1f} s away, past this call's budget",
        retry_after=seconds,
    )


def _shared_hold(provider: models.Provider) -> float:
    """Seconds left of the hold another process recorded on the provider item, as read. Holds are
    wall-clock seconds (epoch), as a service's Retry-After is, never the product's movable clock."""
    if provider.rate_limited_until is None:
        return 0.0
    return max(0.0, float(provider.rate_limited_until) - time.time())


def hold(provider: models.Provider, seconds: float) -> None:
    """The account said "slow down": nobody in this process calls it for `seconds`, and the
    provider item says so to other processes (written only when it extends the hold already
    known, and conditioned on extending the stored one)."""
    telemetry.metric("RateLimited", provider=provider.name)
    until = time.monotonic() + seconds
    with _lock:
        if until <= _held_until.get(provider.name, 0.0):
            return
        _held_until[provider.name] = until
    shared = time.time() + seconds
    if provider.rate_limited_until is not None and float(provider.rate_limited_until) >= shared:
        return
    attribute = models.Provider.rate_limited_until
    try:
        provider.update(actions=[attribute.set(shared)], condition=attribute.does_not_exist() | (attribute < shared))
    except UpdateError as error:
        if not models.is_conditional_failure(error):  # the hold in this process stands either way
            log.warning("%s: rate limit hold not shared: %s", provider.name, error)
