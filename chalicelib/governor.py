"""The rate governor: how fast, and how many creates at once, we ask one provider account.

Clouds limit an account's request rate (OVH: 20 requests/s per project, Rackspace publishes
per-minute limits) and answer `429` with `Retry-After` when it is passed (an older Nova `413`
"overLimit"). That answer means "slow down", never "broken": it must not count on the provider's
health. Every OpenStack operation of `cloud` passes through `call` (its `_operation` wrapper), so
no call site meters itself.

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

from pynamodb.exceptions import UpdateError

from chalicelib import faults, models, telemetry, timeutil
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
_inside = threading.local()


def creates(provider: models.Provider) -> threading.Semaphore:
    """The bound on this process's creates under way at `provider` at once."""
    size = int(provider.max_concurrent_creates or models.DEFAULT_CONCURRENT_CREATES)
    with _lock:
        return _creating.setdefault((provider.name, size), threading.Semaphore(size))


def call(provider: models.Provider, function, *args, **kwargs):
    """Run one operation on `provider` in its turn, and again after each rate limit it meets
    (at most MAX_RETRIES times, within OMS_RATE_LIMIT_WAIT_SECONDS of waiting). An operation
    inside another (a create resolving its label) is the outer one's: it takes no turn of its
    own, and a rate limit it meets makes the outer one wait and try again whole."""
    if getattr(_inside, "active", False):
        return function(provider, *args, **kwargs)
    deadline = time.monotonic() + settings.rate_limit_wait_seconds
    retries = 0
    _inside.active = True
    try:
        while True:
            _wait_turn(provider, deadline)
            try:
                return function(provider, *args, **kwargs)
            except faults.CloudError as error:
                if error.error_class != faults.RATE_LIMITED:
                    raise
                hold(provider, error.retry_after)
                if retries == MAX_RETRIES:
                    raise
                retries += 1
    finally:
        _inside.active = False


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
    """Seconds left of the hold another process recorded on the provider item, as read."""
    if provider.rate_limited_until is None:
        return 0.0
    return max(0.0, float(provider.rate_limited_until) - timeutil.clock.now().timestamp())


def hold(provider: models.Provider, retry_after: float | None) -> None:
    """The account said "slow down": nobody in this process calls it for `retry_after` seconds,
    and the provider item says so to other processes (written only when it extends the hold
    already known, and conditioned on extending the stored one)."""
    seconds = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
    telemetry.metric("RateLimited", provider=provider.name)
    until = time.monotonic() + seconds
    with _lock:
        if until <= _held_until.get(provider.name, 0.0):
            return
        _held_until[provider.name] = until
    shared = timeutil.clock.now().timestamp() + seconds
    if provider.rate_limited_until is not None and float(provider.rate_limited_until) >= shared:
        return
    attribute = models.Provider.rate_limited_until
    try:
        provider.update(actions=[attribute.set(shared)], condition=attribute.does_not_exist() | (attribute < shared))
    except UpdateError as error:
        if not models.is_conditional_failure(error):  # the hold in this process stands either way
            log.warning("%s: rate limit hold not shared: %s", provider.name, error)
