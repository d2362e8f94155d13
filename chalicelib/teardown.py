"""Teardown: delete a DELETING instance's server (and floating IP), then end it (`lifecycle.end`)
and free its slot.

The stream adapter tears a batch down in parallel; the sweeper retries the deletes that failed
or were never made (a lost event, a provider whose circuit was open). A failed delete leaves the
instance DELETING with a back-off (`lifecycle.delete_failed`): a stuck provider never blocks the
stream.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pynamodb.exceptions import DoesNotExist

from chalicelib import cloud, lifecycle, models, slots, telemetry

log = logging.getLogger("oms.teardown")

AT_ONCE = 16

ProviderLookup = Callable[[str], "models.Provider | None"]


def teardown(
    instance: models.Instance,
    provider: models.Provider | None,
    listed: dict[str, cloud.Server] | None = None,
    *,
    give: bool = True,
) -> str | None:
    """Delete an instance's server (gone counts as deleted), give its slot back, mark it DELETED.

    `instance` was read consistently; `provider` is its provider's item (None: it no longer
    exists). `listed` is the provider's server list (the sweeper's), taken after the instance
    entered DELETING: a server missing from it is gone, and needs no call. Returns the provider
    whose slot was released (with `give=False` the caller gives it back)."""
    if instance.state != models.DELETING:
        return None  # a repeated delivery: someone already moved it on
    if instance.provider is None:
        lifecycle.end(instance)
        return None
    if provider is None:
        raise DoesNotExist(f"provider {instance.provider} of instance {instance.id}")
    server_id = instance.server_id
    if server_id is None and not lifecycle.stale(instance):
        return None  # its create may be in flight: the launcher deletes what it made and finishes this
    try:
        if instance.floating_ip_id:
            cloud.release_floating_ip(provider, instance.floating_ip_id)
        if server_id is None:
            servers = listed.values() if listed is not None else cloud.our_servers(provider)
            server_id = next((s.id for s in servers if s.instance_id == instance.id), None)
        if server_id is not None and listed is not None and server_id in listed and listed[server_id].deleting:
            # A delete is under way there (ours, whose answer was lost, or anyone's): wait for it,
            # asking again would only queue another. The sweeper looks again after the back-off.
            lifecycle.delete_deferred(instance, None)
            return None
        if server_id is not None and (listed is None or server_id in listed):
            cloud.delete_server(provider, server_id)
    except cloud.CloudError as error:
        # Left in DELETING: the sweeper retries. A stuck provider must not block the stream.
        log.warning("instance %s: delete on %s failed (%s); will retry", instance.id, provider.name, error.message)
        lifecycle.delete_failed(instance)
        return None
    fields = telemetry.about(instance, to=models.DELETED)
    if not lifecycle.end(instance, give=give):
        return None
    log.info("instance %s: server deleted on %s", instance.id, provider.name, extra=fields)
    return provider.name


def providers_once() -> ProviderLookup:
    """A provider lookup that reads each provider once, shared by threads (None: it is gone)."""
    found: dict[str, models.Provider | None] = {}
    lock = threading.Lock()

    def provider(name: str) -> models.Provider | None:
        with lock:
            if name not in found:
                try:
                    found[name] = models.Provider.get(name)
                except DoesNotExist:
                    found[name] = None
            return found[name]

    return provider


def teardown_batch(instances: list[models.Instance], provider: ProviderLookup) -> tuple[Counter[str], list[str]]:
    """Tear instances down in parallel (each waits on its provider's DELETE call), each provider's
    freed slots given back in one write. Returns the slots freed per provider and the ids of
    instances whose teardown crashed (to be retried)."""
    released: Counter[str] = Counter()
    crashed: list[str] = []

    def one(instance: models.Instance) -> str | None:
        return teardown(instance, provider(instance.provider) if instance.provider else None, give=False)

    if not instances:
        return released, crashed
    with ThreadPoolExecutor(max_workers=min(AT_ONCE, len(instances))) as pool:
        futures = [(i, pool.submit(telemetry.carry(one, "teardown"), i)) for i in instances]
        for instance, future in futures:
            try:
                name = future.result()
            except Exception:
                log.exception("instance %s: teardown failed", instance.id)
                crashed.append(instance.id)
                continue
            if name:
                released[name] += 1
    for name, count in released.items():
        slots.give_back(name, count)
    return released, crashed
