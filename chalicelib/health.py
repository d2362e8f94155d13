"""Provider health and quota: one check is a token plus `GET /limits`; its outcome drives the
circuit breaker (closed -> open after N failures in a row -> half-open at `retry_at`)."""

from __future__ import annotations

from datetime import timedelta

from chalicelib import cloud, models, timeutil

FAILURES_TO_OPEN = 3
BASE_COOLDOWN_SECONDS = 30
MAX_COOLDOWN_SECONDS = 600


def cooldown_seconds(consecutive_failures: int) -> int:
    """Exponential cooldown once the circuit is open, capped."""
    extra = max(0, consecutive_failures - FAILURES_TO_OPEN)
    return min(MAX_COOLDOWN_SECONDS, BASE_COOLDOWN_SECONDS * 2**extra)


def check(provider: models.Provider) -> models.Provider:
    """Run a health check now and record its outcome on the provider item."""
    now = timeutil.now()
    try:
        limits = cloud.limits(provider)
    except cloud.CloudError as error:
        failures = int(provider.consecutive_failures) + 1
        down = error.error_class == cloud.AUTH or failures >= FAILURES_TO_OPEN
        provider.update(
            actions=[
                models.Provider.health_state.set("down" if down else "degraded"),
                models.Provider.checked_at.set(timeutil.iso(now)),
                models.Provider.last_error.set(f"{error.error_class}: {error.message}"[:500]),
                models.Provider.consecutive_failures.set(failures),
                models.Provider.retry_at.set(
                    timeutil.iso(now + timedelta(seconds=cooldown_seconds(failures))) if down else None
                ),
            ]
        )
        return provider
    # Servers that are not ours use up the account's quota too.
    not_ours = max(0, limits.used_instances - int(provider.in_use))
    provider.update(
        actions=[
            models.Provider.health_state.set("healthy"),
            models.Provider.checked_at.set(timeutil.iso(now)),
            models.Provider.last_error.set(None),
            models.Provider.consecutive_failures.set(0),
            models.Provider.retry_at.set(None),
            models.Provider.quota_instances.set(max(0, limits.max_instances - not_ours)),
        ]
    )
    return provider
