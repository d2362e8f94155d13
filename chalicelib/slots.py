"""Slots: a provider's `in_use` counts the instances that hold (or are about to hold) a server there.

Reserving is a conditional `in_use + 1` (only while `in_use < cap`), then the instance's claim
(PENDING -> LAUNCHING at the version read); a lost claim gives the slot straight back. Releasing
is the instance's conditional transition out of a slot-holding state, then `in_use - 1`: only
the writer whose transition won releases, so a slot is released exactly once however often a
record is delivered.

Two single-item writes rather than one transaction, on purpose: a crash between them can only
leave `in_use` too high (never a server over the cap), and the hot provider item does not make
transactions conflict with each other. (moto also restores whole tables when a transaction
fails, dropping other writers' concurrent changes.)
"""

from __future__ import annotations

from collections.abc import Iterable

from pynamodb.exceptions import UpdateError

from chalicelib import models, timeutil

# States in which an instance holds a slot on its provider.
HOLDING = (models.LAUNCHING, models.BUILDING, models.ACTIVE, models.DELETING)

NO_ROOM, LOST, OK = "no_room", "lost", "ok"


def _has_room():
    provider = models.Provider
    quota_ok = provider.quota_instances.does_not_exist() | (provider.in_use < provider.quota_instances)
    return (provider.in_use < provider.max_instances) & quota_ok & (provider.enabled == True)  # noqa: E712


def _give_back(provider_name: str) -> None:
    try:
        models.Provider(provider_name).update(
            actions=[models.Provider.in_use.add(-1)], condition=models.Provider.in_use > 0
        )
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise  # at 0 already (the provider was re-created, or drift): nothing to give back


def reserve(provider: models.Provider, instance: models.Instance) -> str:
    """Take a slot on `provider` and claim `instance` for it (PENDING -> LAUNCHING).

    Returns OK, NO_ROOM (the provider is at its cap) or LOST (someone else changed the instance).
    """
    try:
        models.Provider(provider.name).update(actions=[models.Provider.in_use.add(1)], condition=_has_room())
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return NO_ROOM
        raise
    claimed = models.transition(
        instance,
        models.LAUNCHING,
        expected=[models.PENDING],
        actions=[models.Instance.provider.set(provider.name), models.Instance.launched_at.set(timeutil.now_iso())],
    )
    if not claimed:
        _give_back(provider.name)
        return LOST
    return OK


def release(instance: models.Instance, to_state: str, actions: Iterable = ()) -> bool:
    """Move a slot-holding instance to `to_state`, then give its slot back.

    False when the instance was no longer in the state (and version) we read: nothing changed.
    """
    if instance.state not in HOLDING or instance.provider is None:
        raise ValueError(f"instance {instance.id} in {instance.state} holds no slot")
    provider_name = instance.provider
    if not models.transition(instance, to_state, expected=[instance.state], actions=actions):
        return False
    _give_back(provider_name)
    return True
