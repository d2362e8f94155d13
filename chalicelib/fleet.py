"""Requests and their instances, as the API sees them: accept, list, extend, retire.

Accepting a request hands it what its label's warm pool has (`pools.take`) and writes the rest of
its instances PENDING (`lifecycle.accept`); the instances table's stream carries them to the launch
worker. A scheduled request (`start_at`) writes none: it waits in the sparse by_schedule index
until the sweeper `start`s it (schedule.py). Retiring (`lifecycle.retire`) writes DELETING (or
DELETED when nothing was placed yet), which the stream carries to teardown.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib import (
    callbacks,
    lifecycle,
    maintenance,
    models,
    pages,
    pools,
    providers,
    schedule,
    schemas,
    slots,
    timeutil,
)
from chalicelib.auth import Caller
from chalicelib.errors import ApiError, invalid, not_found
from chalicelib.settings import settings


def _request_id(caller: Caller, client_token: str | None) -> str:
    # A client token maps to one id per owner, so a retried POST lands on the same item.
    if client_token is None:
        return "r-" + secrets.token_hex(8)
    digest = hashlib.sha256(f"{caller.owner}\0{client_token}".encode()).hexdigest()
    return "r-" + digest[:16]


def _body_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _instances_of(request_id: str) -> list[models.Instance]:
    return list(models.Instance.by_request.query(request_id))


def create_request(caller: Caller, body: dict) -> tuple[models.Request, list[models.Instance], bool]:
    """Accept a request. Returns (request, instances, created); created is False for a retry."""
    schemas.check_request(body)
    if body.get("callback_url") is not None:
        callbacks.check_url(body["callback_url"])
    fields = {
        "lifetime_minutes": settings.default_lifetime_minutes,
        "name_prefix": "oms",
        **{k: v for k, v in body.items() if v is not None},
    }
    offering = providers.offering(fields["label"])
    if not offering:
        raise ApiError("unprocessable", f"no enabled provider offers label {fields['label']}", "label")
    request_id = _request_id(caller, fields.get("client_token"))
    body_hash = _body_hash(fields)
    created_at = timeutil.now()
    try:
        start_at = _start_at(fields.get("start_at"), created_at)
    except ApiError:
        # A retry of a scheduled request whose start has come since gets the request it made.
        if fields.get("client_token") is not None and _exists(request_id):
            return _retried(request_id, body_hash)
        raise
    scheduled = {}
    if start_at is not None:
        expires = start_at + timedelta(minutes=fields["lifetime_minutes"])
        scheduled = {
            "start_at": timeutil.iso(start_at),
            "launch_at": timeutil.iso(schedule.launch_at(start_at, lead(fields["label"], offering))),
            "admission": admission(request_id, fields["label"], fields["count"], start_at, expires).as_dict(),
            "schedule_queue": models.SCHEDULE_QUEUE,
        }
    request = models.Request(
        request_id,
        owner=caller.owner,
        label=fields["label"],
        count=fields["count"],
        lifetime_minutes=fields["lifetime_minutes"],
        name_prefix=fields["name_prefix"],
        ssh_public_key=fields.get("ssh_public_key"),
        user_data=fields.get("user_data"),
        client_token=fields.get("client_token"),
        callback_url=fields.get("callback_url"),
        callbacks={} if fields.get("callback_url") else None,
        body_hash=body_hash,
        created_at=timeutil.iso(created_at),
        expires_at=timeutil.in_minutes(fields["lifetime_minutes"], start_at or created_at),
        **scheduled,
    )
    try:
        request.save(condition=models.Request.id.does_not_exist())
    except PutError as error:
        if not models.is_conditional_failure(error):
            raise
        return _retried(request_id, body_hash)
    if request.schedule_queue is not None:
        return request, [], True
    return request, launch(request, []), True


def _exists(request_id: str) -> bool:
    try:
        models.Request.get(request_id)
    except DoesNotExist:
        return False
    return True


def _retried(request_id: str, body_hash: str) -> tuple[models.Request, list[models.Instance], bool]:
    """A POST whose client_token made a request already: that request, if the body is the same."""
    request = models.Request.get(request_id, consistent_read=True)
    if request.body_hash != body_hash:
        raise ApiError(
            "conflict", "client_token was already used with a different request body", "client_token"
        ) from None
    instances = _instances_of(request.id)
    if request.delete_requested or timeutil.parse(request.expires_at) <= timeutil.now():
        # Over: its ended instances may be gone already (the TTL); none is brought back.
        return request, instances, False
    if request.schedule_queue is not None and not request.launched_at:
        return request, instances, False  # scheduled, not launched yet: its instances come at launch
    # A retry: finish writing instances a crashed first attempt may have left out.
    return request, launch(request, instances), False


def launch(request: models.Request, instances: list[models.Instance]) -> list[models.Instance]:
    """Write the request's instances not written yet (PENDING): the one place a request's launch
    begins, for one made now, its retry, and a scheduled one the sweeper `start`s. First it is
    handed what its label's warm pool has ready (or booting): `pools.take`, by a plan kept on the
    request, so a retry (whose `instances`, from an index, may lag) takes nothing twice."""
    known = {i.id for i in instances}
    taken = [i for i in pools.take(request) if i.id not in known]
    return lifecycle.accept(request, [*instances, *taken])


def _start_at(text: str | None, now: datetime) -> datetime | None:
    """The request's start, if scheduled: in the future, at most OMS_SCHEDULE_MAX_DAYS ahead."""
    if text is None:
        return None
    start_at = maintenance.parse(text)
    if start_at <= now:
        raise invalid(
            f"start_at must be in the future (now is {timeutil.iso(now)}); leave it out to start now", "start_at"
        )
    days = settings.schedule_max_days
    latest = now + timedelta(days=days)
    if start_at > latest:
        raise invalid(f"start_at must be at most {days} days ahead (until {timeutil.iso(latest)})", "start_at")
    return start_at


def lead(label: str, offering: list[models.Provider]) -> float:
    """How long before its start a request of `label` is launched (schedule.lead_seconds)."""
    return schedule.lead_seconds(
        [list(p.ready_samples or []) for p in offering if p.enabled and label in p.labels.as_dict()],
        settings.sweep_seconds,
    )


def admission(request_id: str, label: str, count: int, start_at: datetime, expires_at: datetime) -> schedule.Admission:
    """The forecast for a scheduled request (schedule.admission), from what is held and booked now."""
    now = timeutil.now()
    everyone = providers.all_providers()
    offering = [p for p in everyone if p.enabled and label in p.labels.as_dict()]
    labels = {name for p in offering for name in p.labels.as_dict()}
    accounts = []
    for provider in offering:
        held = slots.held(provider.name)
        # A DELETING instance frees its slot now: it holds none at a later start.
        holders = [timeutil.parse(i.expires_at) for s, found in held.items() if s != models.DELETING for i in found]
        accounts.append(schedule.Account(provider.name, provider.cap, maintenance.windows(provider, now), holders))
    pending = [
        timeutil.parse(i.expires_at)
        for name in sorted(labels)
        for i in models.Instance.by_label_state.query(name, models.Instance.state == models.PENDING)
    ]
    booked = [
        schedule.Booking(timeutil.parse(r.start_at), timeutil.parse(r.expires_at), int(r.count))
        for r in models.Request.by_schedule.query(
            models.SCHEDULE_QUEUE, models.Request.start_at < timeutil.iso(expires_at)
        )
        if r.id != request_id and r.label in labels and not r.delete_requested
    ]
    return schedule.admission(label, int(count), start_at, expires_at, accounts, pending, booked)


def start(request: models.Request) -> list[models.Instance] | None:
    """Launch a scheduled request (the sweeper, once its launch time has come). A conditional
    claim first, so that two passes never launch it twice: None when another pass has it (or it
    was deleted). A claim older than OMS_LAUNCH_STALE_SECONDS (a pass that died between the claim
    and its instances) is taken again; the accept writes only the instances still missing."""
    now = timeutil.now()
    stale = timeutil.iso(now - timedelta(seconds=settings.launch_stale_seconds))
    condition = (
        models.Request.schedule_queue.exists()
        & (models.Request.delete_requested != True)  # noqa: E712 - a DynamoDB condition, not a Python test
        & (models.Request.launched_at.does_not_exist() | (models.Request.launched_at < stale))
    )
    try:
        request.update(
            actions=[
                models.Request.launched_at.set(timeutil.iso(now)),
                models.Request.launch_at.set(timeutil.iso(now)),
            ],
            condition=condition,
        )
    except UpdateError as error:
        if models.is_conditional_failure(error):
            return None
        raise
    instances = launch(request, _instances_of(request.id))
    request.update(actions=[models.Request.schedule_queue.remove()])
    request.refresh(consistent_read=True)
    if request.delete_requested:  # deleted while its instances were written: they go too
        for instance in instances:
            _changing(lifecycle.retire, instance)
    return instances


def get_request(caller: Caller, request_id: str) -> tuple[models.Request, list[models.Instance]]:
    try:
        request = models.Request.get(request_id)
    except DoesNotExist:
        raise not_found(f"request {request_id}") from None
    if not caller.may_see(request.owner):
        raise not_found(f"request {request_id}")
    return request, _instances_of(request.id)


def _filters(params: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The filters given; an empty one is a mistake worth naming, not a silent "everything"."""
    for name in names:
        if params.get(name) == "":
            raise invalid(f"{name} must not be empty: leave it out to list everything", name)
    return {name: params[name] for name in names if name in params}


def list_requests(caller: Caller, params: Mapping[str, str]) -> tuple[list[tuple], str | None]:
    owner = _filters(params, ("owner",)).get("owner")
    if not caller.is_admin:
        if owner is not None and owner != caller.owner:
            raise ApiError("forbidden", "owner filters need an admin key")
        owner = caller.owner
    if owner is not None:
        query = lambda **kw: models.Request.by_owner.query(owner, scan_index_forward=False, **kw)  # noqa: E731
    else:
        query = lambda **kw: models.Request.by_kind.query("request", scan_index_forward=False, **kw)  # noqa: E731
    requests, cursor = pages.page("requests", query, params, {"owner": owner or ""})
    return [(r, _instances_of(r.id)) for r in requests], cursor


def _changing(write, *args) -> None:
    try:
        write(*args)
    except lifecycle.ChangingTooFast as error:
        raise ApiError("conflict", str(error)) from None


def delete_request(caller: Caller, request_id: str) -> tuple[models.Request, list[models.Instance]]:
    request, instances = get_request(caller, request_id)
    if not request.delete_requested or request.schedule_queue is not None:
        # A scheduled request leaves the queue: it is never launched.
        request.update(actions=[models.Request.delete_requested.set(True), models.Request.schedule_queue.remove()])
        instances = _instances_of(request.id)  # a launch may have written them since they were read
    for instance in instances:
        _changing(lifecycle.retire, instance)
    return request, instances


def extend_request(
    caller: Caller, request_id: str, body: dict
) -> tuple[models.Request, list[models.Instance], list[dict]]:
    """Move the request's expiry, and its instances'. The extend always succeeds (the time is the
    user's to take); instances it carries into a maintenance window of their provider are named
    in warnings: we do not delete them then, but the provider may stop them."""
    request, instances = get_request(caller, request_id)
    if request.delete_requested:
        raise ApiError("conflict", f"request {request_id} is being deleted")
    base = max(timeutil.parse(request.expires_at), timeutil.now())
    expires_at = timeutil.in_minutes(body["minutes"], base)
    request.update(actions=[models.Request.expires_at.set(expires_at)])
    for instance in instances:
        _changing(lifecycle.extend, instance, expires_at)
    return request, instances, maintenance_warnings(instances, timeutil.parse(expires_at))


def maintenance_warnings(instances: list[models.Instance], expires_at) -> list[dict]:
    """For each live instance placed on a provider with a window starting before `expires_at`."""
    warnings = []
    now = timeutil.now()
    found: dict[str, models.Provider | None] = {}
    for instance in instances:
        if instance.state not in models.LIVE_STATES or instance.state == models.DELETING or not instance.provider:
            continue
        if instance.provider not in found:
            try:
                found[instance.provider] = models.Provider.get(instance.provider)
            except DoesNotExist:
                found[instance.provider] = None
        provider = found[instance.provider]
        window = maintenance.next_window(provider, now) if provider is not None else None
        if window is None or window.start >= expires_at:
            continue
        warnings.append(
            {
                "instance_id": instance.id,
                "provider": instance.provider,
                **window.as_dict(),
                "message": f"instance {instance.id} now runs into a maintenance window of {instance.provider} "
                f"({timeutil.iso(window.start)} to {timeutil.iso(window.end)}): the provider may stop it then",
            }
        )
    return warnings


_INSTANCE_FILTERS = ("state", "provider", "request_id", "label")


def list_instances(caller: Caller, params: Mapping[str, str]) -> tuple[list[models.Instance], str | None]:
    """One page of instances, through the most selective index the filters allow."""
    filters = _filters(params, _INSTANCE_FILTERS)
    scope = {**filters, "owner": "" if caller.is_admin else caller.owner}
    if "state" in filters and filters["state"] not in models.STATES:
        raise invalid(f"state must be one of {', '.join(models.STATES)}", "state")
    condition = None

    def narrow(attribute, value):
        nonlocal condition
        clause = attribute == value
        condition = clause if condition is None else condition & clause

    if not caller.is_admin:
        narrow(models.Instance.owner, caller.owner)
    index, key, range_condition = models.Instance.by_kind, "instance", None
    if "request_id" in filters:
        index, key = models.Instance.by_request, filters.pop("request_id")
    elif "provider" in filters:
        index, key = models.Instance.by_provider_state, filters.pop("provider")
        if "state" in filters:
            range_condition = models.Instance.state == filters.pop("state")
    elif "label" in filters:
        index, key = models.Instance.by_label_state, filters.pop("label")
        if "state" in filters:
            range_condition = models.Instance.state == filters.pop("state")
    elif not caller.is_admin:
        index, key = models.Instance.by_owner, caller.owner
        condition = None
    elif "state" in filters:
        index, key = models.Instance.by_state_expires, filters.pop("state")
    for name, value in filters.items():
        narrow(getattr(models.Instance, name), value)
    return pages.page(
        "instances",
        lambda **kw: index.query(key, range_key_condition=range_condition, filter_condition=condition, **kw),
        params,
        scope,
    )


def get_instance(caller: Caller, instance_id: str) -> models.Instance:
    try:
        instance = models.Instance.get(instance_id)
    except DoesNotExist:
        raise not_found(f"instance {instance_id}") from None
    if not caller.may_see(instance.owner):
        raise not_found(f"instance {instance_id}")
    return instance


def delete_instance(caller: Caller, instance_id: str) -> models.Instance:
    instance = get_instance(caller, instance_id)
    _changing(lifecycle.retire, instance)
    return instance
