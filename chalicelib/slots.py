"""Slots: a provider's `in_use` counts the instances that hold (or are about to hold) a server there.

Reserving is one conditional `in_use + n` per provider and launch round (only while that stays
within the cap and quota), then each instance's claim (`lifecycle.claim`); a lost claim gives its
slot straight back. Releasing is the instance's conditional transition out of a slot-holding
state (`lifecycle`), then `give_back`: only the writer whose transition won releases, so a slot is
released exactly once however often a record is delivered.

The sweeper recomputes `in_use` from the instances table (`correct_drift`) and corrects it when
the very same difference has stood, with no slot change (every write to `in_use` bumps
`slot_changes`), for `OMS_LAUNCH_STALE_SECONDS`: a reserve or release in flight between the count
and the read makes `in_use` look wrong for a moment, either way; so do slots a launch pass has
reserved and not claimed yet (its instances wait for a create turn, which may outlast two quick
passes without any slot changing hands); a crash between the two writes leaves it wrong for good.

Two single-item writes rather than one transaction, on purpose: a crash between them can only
leave `in_use` too high (never a server over the cap), and the hot provider item does not make
transactions conflict with each other. (moto also restores whole tables when a transaction
fails, dropping other writers' concurrent changes.)
"""

from __future__ import annotations

from pynamodb.exceptions import UpdateError

from chalicelib import models, timeutil
from chalicelib.settings import settings

HOLDING = models.HOLDING


def give_back(provider_name: str, count: int = 1) -> None:
    """`in_use - count`, never below 0 (a provider re-created, or drift: then one at a time)."""
    try:
        models.Provider(provider_name).update(
            actions=[models.Provider.in_use.add(-count), models.Provider.slot_changes.add(1)],
            condition=models.Provider.in_use >= count,
        )
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise
        if count > 1:
            for _ in range(count):
                give_back(provider_name)


def reserve(
    provider: models.Provider, wanted: int, tries: int = 3, *, marking=(), only_if=None, enabled_only: bool = True
) -> int:
    """Take up to `wanted` slots on `provider` in one conditional write: `in_use + n` only while
    that stays within its cap and known quota, and those are still the ones read. Returns n,
    0 when it is full or disabled. A lost race re-reads the item and tries again. `marking`:
    more actions for the same write (who holds the slot), `only_if`: a further condition;
    `enabled_only=False` takes a slot on a disabled provider too (a canary proving it)."""
    item = models.Provider
    for attempt in range(tries):
        if attempt:
            provider.refresh(consistent_read=True)
        cap = int(provider.max_instances)
        quota = None if provider.quota_instances is None else int(provider.quota_instances)
        limit = provider.cap
        take = min(wanted, provider.free)
        if take <= 0 or (enabled_only and not provider.enabled):
            return 0
        condition = (item.max_instances == cap) & (item.in_use <= limit - take)
        if enabled_only:
            condition &= item.enabled == True  # noqa: E712
        condition &= item.quota_instances.does_not_exist() if quota is None else item.quota_instances == quota
        if only_if is not None:
            condition &= only_if
        try:
            models.Provider(provider.name).update(
                actions=[item.in_use.add(take), item.slot_changes.add(1), *marking], condition=condition
            )
        except UpdateError as error:
            if not models.is_conditional_failure(error):
                raise
            continue
        return take
    return 0


# The index's sort key is the state: the holding states are two ranges of it (ACTIVE..BUILDING and
# DELETING..LAUNCHING; DELETED and FAILED fall between or inside them and are left out).
_HELD_RANGES = ((models.ACTIVE, models.BUILDING), (models.DELETING, models.LAUNCHING))


def held(provider_name: str) -> dict[str, list[models.Instance]]:
    """The instances that hold a slot on the provider, by state: two queries."""
    found: dict[str, list[models.Instance]] = {state: [] for state in HOLDING}
    for low, high in _HELD_RANGES:
        for instance in models.Instance.by_provider_state.query(
            provider_name, models.Instance.state.between(low, high)
        ):
            if instance.state in found:
                found[instance.state].append(instance)
    return found


def holding(provider_name: str) -> int:
    """How many instances hold a slot on the provider."""
    return sum(len(instances) for instances in held(provider_name).values())


def correct_drift(provider: models.Provider, counted: int | None = None) -> int | None:
    """Bring the provider's `in_use` back to the number of instances that hold its slots once the
    same `in_use`, count and `slot_changes` have been seen for `OMS_LAUNCH_STALE_SECONDS` (a pass
    sees them first; one that long after corrects); returns the new value when corrected. The
    write is conditional on no slot having changed hands since the read. `counted` is `holding()`
    when the caller has just read it."""
    counted = holding(provider.name) if counted is None else counted
    provider.refresh(consistent_read=True)
    # A canary boot holds a slot too (canary.py), marked on the item in the write that took it.
    canary = provider.canary.as_dict() if provider.canary is not None else {}
    counted += 1 if canary.get("slot") else 0
    in_use, changes = int(provider.in_use), int(provider.slot_changes or 0)
    seen = None if in_use == counted else f"{in_use}:{counted}:{changes}"
    figures, _, since = (provider.drift_seen or "").partition("@")
    drift_seen = models.Provider.drift_seen
    if seen is None or figures != seen:
        if provider.drift_seen is not None or seen is not None:
            provider.update(actions=[drift_seen.set(f"{seen}@{timeutil.now_iso()}") if seen else drift_seen.remove()])
        return None
    if (timeutil.now() - timeutil.parse(since)).total_seconds() < settings.launch_stale_seconds:
        return None  # maybe slots reserved for a launch pass that has not claimed them yet
    try:
        provider.update(
            actions=[models.Provider.in_use.set(counted), models.Provider.slot_changes.add(1), drift_seen.remove()],
            condition=models.Provider.slot_changes == changes
            if changes
            else models.Provider.slot_changes.does_not_exist() | (models.Provider.slot_changes == 0),
        )
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return None  # a slot changed hands meanwhile: look again next pass
        raise
    return counted
