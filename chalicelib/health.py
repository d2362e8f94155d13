"""Provider health: what each outcome of a call to a provider means for its circuit breaker.

Checks and launches prove different things. A check (a token plus `GET /limits`) proves only
that the API answers: a failed one opens the circuit at once, a passed one closes a circuit that
checks opened, but never clears what launches showed. Launch errors that are the provider's
(auth, unavailable, timeout) count in `launch_failures`: the provider is degraded, down (circuit
open) at the Nth in a row or on an auth failure, and only an accepted create (or a passed
canary) makes it healthy again; when its cooldown ends, the next launch is the trial (half-open).
DESIGN.md draws the state machine.
"""

from __future__ import annotations

from datetime import timedelta

from pynamodb.exceptions import UpdateError

from chalicelib import cloud, maintenance, models, placement, quota, timeutil
from chalicelib.models import DEGRADED, DOWN, HEALTHY
from chalicelib.settings import settings

FAILURES_TO_OPEN = 3
BUILD_FAILURES_TO_PROBATION = 3
MAX_COOLDOWN_SECONDS = 600
# Error classes that say something about the provider as a whole (others concern one server;
# a rate limit concerns how often we ask).
PROVIDER_FAULTS = (cloud.AUTH, cloud.UNAVAILABLE, cloud.TIMEOUT)


def circuit_open(provider: models.Provider) -> bool:
    """True while an open circuit cools down: no call goes to the provider then."""
    retry_at = timeutil.parse(provider.retry_at) if provider.retry_at else None
    return placement.circuit_state(provider.health_state, retry_at, timeutil.now()) == placement.OPEN


def held_until(provider: models.Provider) -> str | None:
    """Until when no call may go to the provider: the end of the maintenance window that is on, or
    of its open circuit's cooldown (the later of the two); None when calls may go now."""
    now = timeutil.now()
    window = maintenance.current(provider, now)
    ends = [timeutil.iso(window.end)] if window else []
    if circuit_open(provider):
        ends.append(provider.retry_at)
    return max(ends) if ends else None


def calls_held(provider: models.Provider) -> bool:
    """True while no call goes to the provider: its circuit is open, or a maintenance window is on
    (treated as down without spending a call on it)."""
    return held_until(provider) is not None


def cooldown_seconds(consecutive_failures: int, base: float | None = None) -> float:
    """Exponential cooldown once the circuit is open, capped."""
    base = settings.circuit_cooldown_seconds if base is None else base
    extra = max(0, consecutive_failures - FAILURES_TO_OPEN)
    return min(max(MAX_COOLDOWN_SECONDS, base), base * 2 ** min(extra, 16))


def _error(error: cloud.CloudError, at: str) -> list:
    return [
        models.Provider.last_error.set(f"{error.error_class}: {error.message}"[:500]),
        models.Provider.last_error_at.set(at),
    ]


def record_failure(provider: models.Provider, error: cloud.CloudError, *, by_check: bool = False) -> None:
    """Count a provider-wide failure, of a health check (`by_check`: the circuit opens at once) or
    of a launch (it opens when it is the Nth in a row, or an auth failure)."""
    now = timeutil.now()
    item = models.Provider
    count = item.checked_at.set(timeutil.iso(now)) if by_check else item.launch_failures.add(1)
    provider.update(actions=[item.consecutive_failures.add(1), count, *_error(error, timeutil.iso(now))])
    failures = int(provider.consecutive_failures)
    # A failed half-open trial keeps the circuit open (with a longer cooldown).
    down = by_check or error.error_class == cloud.AUTH or failures >= FAILURES_TO_OPEN or provider.health_state == DOWN
    provider.update(
        actions=[
            item.health_state.set(DOWN if down else DEGRADED),
            item.retry_at.set(timeutil.iso(now + timedelta(seconds=cooldown_seconds(failures))))
            if down
            else item.retry_at.remove(),
        ]
    )


def record_problem(provider: models.Provider, error: cloud.CloudError) -> None:
    """An error that excludes the provider for one instance only; shown on the provider."""
    actions = _error(error, timeutil.now_iso())
    if error.error_class == cloud.QUOTA:
        # Its real quota is lower than we thought: cap it at what it holds now.
        actions.append(models.Provider.quota_instances.set(models.Provider.in_use))
    if error.error_class == cloud.BUILD_FAILED:
        actions.append(models.Provider.build_failures.add(1))
    provider.update(actions=actions)


def builds_failing(provider: models.Provider) -> bool:
    """Its last few builds all ended in ERROR: it gets one instance per launch pass (a probe)."""
    return int(provider.build_failures or 0) >= BUILD_FAILURES_TO_PROBATION


def record_build_ok(provider: models.Provider) -> None:
    """A server came up ACTIVE: its builds work. Written only when failures were counted."""
    if not int(provider.build_failures or 0):
        return
    try:
        provider.update(actions=[models.Provider.build_failures.set(0)], condition=models.Provider.build_failures > 0)
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise


def record_outcome(provider: models.Provider, error: cloud.CloudError) -> None:
    """What a launch's error means for the provider. A rate limit means nothing for its health or
    quota: it works, we asked too often (the rate governor reacts to it)."""
    if error.error_class == cloud.RATE_LIMITED:
        return
    if error.error_class in PROVIDER_FAULTS:
        record_failure(provider, error)
    else:
        record_problem(provider, error)


def record_launch_ok(provider: models.Provider) -> None:
    """A create was accepted: the provider is healthy (its launch failures are over, a half-open
    trial passed) and off probation."""
    now = timeutil.now_iso()
    provider.update(
        actions=[
            models.Provider.health_state.set(HEALTHY),
            models.Provider.consecutive_failures.set(0),
            models.Provider.launch_failures.set(0),
            models.Provider.retry_at.remove(),
            models.Provider.last_launch_ok_at.set(now),
        ]
    )


def check_setup(provider: models.Provider) -> list[str]:
    """What in the labels' settings the account cannot take, in words (kept on the provider until
    the next explicit check; sweeps do not run this). Returns the problems found."""
    problems = []
    unnamed = sorted(label for label, mapping in provider.labels.as_dict().items() if not mapping.get("network"))
    if unnamed:
        try:
            networks = cloud.candidate_networks(provider)
        except cloud.CloudError as error:
            networks, problems = None, [f"networks could not be listed: {error.message}"]
        if networks is not None and len(networks) != 1:
            seen = f"several networks ({', '.join(networks)})" if networks else "no network"
            problems += [
                f"label {label} names no network and the project sees {seen}: Nova cannot choose; "
                "set the label's network"
                for label in unnamed
            ]
    attribute = models.Provider.setup_problems
    provider.update(actions=[attribute.set(problems) if problems else attribute.remove()])
    return problems


def check(provider: models.Provider) -> bool:
    """Run a health check now and record its outcome on the provider item, with its quota (the
    instances of ours the account still takes, whichever of its quotas runs out first: quota.py);
    True when it passed."""
    try:
        limits = cloud.limits(provider)
    except cloud.CloudError as error:
        record_failure(provider, error, by_check=True)
        return False
    reading = quota.read(provider, limits)
    provider.refresh(consistent_read=True)  # a fresh in_use: the check may have taken a while
    provider.update(
        actions=[
            models.Provider.checked_at.set(timeutil.now_iso()),
            *quota.record(quota.rooms(reading, int(provider.in_use))),
        ]
    )
    _answered(provider)
    return True


def _answered(provider: models.Provider) -> None:
    """A passed check makes the provider healthy unless launches have failed there since one last
    succeeded: what they showed stands until a launch proves otherwise (when the circuit they
    opened half-opens, the next launch is the trial). The write is conditioned on none having
    failed meanwhile."""
    item = models.Provider
    try:
        provider.update(
            actions=[item.health_state.set(HEALTHY), item.consecutive_failures.set(0), item.retry_at.remove()],
            condition=item.launch_failures.does_not_exist() | (item.launch_failures == 0),
        )
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise
