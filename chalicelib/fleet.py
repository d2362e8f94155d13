"""Requests and their instances, as the API sees them: accept, list, extend, retire.

Accepting a request only writes PENDING instances; the instances table's stream carries them to
the launch worker. Retiring writes DELETING (or DELETED when nothing was placed yet), which the
stream carries to teardown.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib import models, pages, providers, schemas, timeutil
from chalicelib.auth import Caller
from chalicelib.errors import ApiError, invalid, not_found
from chalicelib.settings import settings

_WRITE_RETRIES = 10


def _request_id(caller: Caller, client_token: str | None) -> str:
    # A client token maps to one id per owner, so a retried POST lands on the same item.
    if client_token is None:
        return "r-" + secrets.token_hex(8)
    digest = hashlib.sha256(f"{caller.owner}\0{client_token}".encode()).hexdigest()
    return "r-" + digest[:16]


def _instance_id(request_id: str, index: int) -> str:
    return "i-" + hashlib.sha256(f"{request_id}/{index}".encode()).hexdigest()[:16]


def _body_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _instances_of(request_id: str) -> list[models.Instance]:
    return list(models.Instance.by_request.query(request_id))


def _new_instances(request: models.Request, existing: set[str]) -> list[models.Instance]:
    short = request.id[2:8]
    return [
        models.Instance(
            _instance_id(request.id, index),
            request_id=request.id,
            owner=request.owner,
            name=f"{request.name_prefix}-{short}-{index:03d}",
            label=request.label,
            state=models.PENDING,
            created_at=request.created_at,
            expires_at=request.expires_at,
        )
        for index in range(int(request.count))
        if _instance_id(request.id, index) not in existing
    ]


def _write_missing_instances(request: models.Request, instances: list[models.Instance]) -> list[models.Instance]:
    """Write whichever of the request's instances are not there yet (all, on first accept)."""
    missing = _new_instances(request, {i.id for i in instances})
    if missing:
        with models.Instance.batch_write() as batch:
            for instance in missing:
                batch.save(instance)
    return sorted([*instances, *missing], key=lambda i: i.name)


def create_request(caller: Caller, body: dict) -> tuple[models.Request, list[models.Instance], bool]:
    """Accept a request. Returns (request, instances, created); created is False for a retry."""
    schemas.check_request(body)
    fields = {
        "lifetime_minutes": settings.default_lifetime_minutes,
        "name_prefix": "oms",
        **{k: v for k, v in body.items() if v is not None},
    }
    if not providers.offering(fields["label"]):
        raise ApiError("unprocessable", f"no enabled provider offers label {fields['label']}", "label")
    request_id = _request_id(caller, fields.get("client_token"))
    body_hash = _body_hash(fields)
    created_at = timeutil.now()
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
        body_hash=body_hash,
        created_at=timeutil.iso(created_at),
        expires_at=timeutil.in_minutes(fields["lifetime_minutes"], created_at),
    )
    try:
        request.save(condition=models.Request.id.does_not_exist())
    except PutError as error:
        if not models.is_conditional_failure(error):
            raise
        request = models.Request.get(request_id)
        if request.body_hash != body_hash:
            raise ApiError(
                "conflict", "client_token was already used with a different request body", "client_token"
            ) from None
        instances = _instances_of(request.id)
        if request.delete_requested or timeutil.parse(request.expires_at) <= timeutil.now():
            # Over: its ended instances may be gone already (the TTL); none is brought back.
            return request, instances, False
        # A retry: finish writing instances a crashed first attempt may have left out.
        return request, _write_missing_instances(request, instances), False
    return request, _write_missing_instances(request, []), True


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
    requests, cursor = pages.page(query, params)
    return [(r, _instances_of(r.id)) for r in requests], cursor


def retire(instance: models.Instance, expired_by: str | None = None) -> bool:
    """Send one instance towards DELETED: straight there if nothing was placed, else via DELETING.

    With `expired_by`, only while its `expires_at` is still at or before that time (an extension
    that lands meanwhile wins). Returns True when this call moved it."""
    for _ in range(_WRITE_RETRIES):
        if instance.state not in models.LIVE_STATES or instance.state == models.DELETING:
            return False
        if expired_by is not None and instance.expires_at > expired_by:
            return False
        target = models.DELETED if instance.state == models.PENDING else models.DELETING
        if models.transition(instance, target, expected=[instance.state]):
            return True
    raise ApiError("conflict", f"instance {instance.id} is changing too fast; try again")


def delete_request(caller: Caller, request_id: str) -> tuple[models.Request, list[models.Instance]]:
    request, instances = get_request(caller, request_id)
    if not request.delete_requested:
        request.update(actions=[models.Request.delete_requested.set(True)])
    for instance in instances:
        retire(instance)
    return request, instances


def extend_request(caller: Caller, request_id: str, body: dict) -> tuple[models.Request, list[models.Instance]]:
    request, instances = get_request(caller, request_id)
    if request.delete_requested:
        raise ApiError("conflict", f"request {request_id} is being deleted")
    base = max(timeutil.parse(request.expires_at), timeutil.now())
    expires_at = timeutil.in_minutes(body["minutes"], base)
    request.update(actions=[models.Request.expires_at.set(expires_at)])
    for instance in instances:
        _set_expiry(instance, expires_at)
    return request, instances


def _set_expiry(instance: models.Instance, expires_at: str) -> None:
    for _ in range(_WRITE_RETRIES):
        if instance.state not in models.LIVE_STATES or instance.state == models.DELETING:
            return
        try:
            instance.update(
                actions=[models.Instance.expires_at.set(expires_at)],
                condition=models.Instance.state.is_in(*models.LIVE_STATES),
            )
            return
        except Exception as error:  # noqa: BLE001 - only a lost condition is retried
            if not models.is_conditional_failure(error):
                raise
            instance.refresh()
    raise ApiError("conflict", f"instance {instance.id} is changing too fast; try again")


_INSTANCE_FILTERS = ("state", "provider", "request_id", "label")


def list_instances(caller: Caller, params: Mapping[str, str]) -> tuple[list[models.Instance], str | None]:
    """One page of instances, through the most selective index the filters allow."""
    filters = _filters(params, _INSTANCE_FILTERS)
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
        lambda **kw: index.query(key, range_key_condition=range_condition, filter_condition=condition, **kw),
        params,
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
    retire(instance)
    return instance
