"""Provider accounts: register, change (credentials included), list, remove.

Secrets go to Secrets Manager first, then the item records the secret's ARN and version, so a
crash in between leaves at most an unused secret version, never an item without its secret.
"""

from __future__ import annotations

from collections.abc import Mapping

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib import canary, credentials, maintenance, models, pages, reach, schemas, timeutil
from chalicelib.errors import ApiError, not_found

# Item attributes a client may write directly (secrets and the name are handled apart).
_PLAIN_FIELDS = (
    "auth_url",
    "region",
    "project_name",
    "project_id",
    "user_domain_name",
    "project_domain_name",
    "username",
    "application_credential_id",
    "interface",
    "verify_tls",
    "max_instances",
    "priority",
    "enabled",
    "floating_ip",
    "floating_network",
    "ssh_security_group",
    "canary_label",
    "canary_every_hours",
    "address_family",
    "boot_timeout_seconds",
    "multipart_user_data",
    "rate_limit_per_second",
    "max_concurrent_creates",
    "labels",
    "maintenance",
)


def get(name: str) -> models.Provider:
    try:
        return models.Provider.get(name)
    except DoesNotExist:
        raise not_found(f"provider {name}") from None


def list_page(params: Mapping[str, str]) -> tuple[list[models.Provider], str | None]:
    return pages.page("providers", lambda **kw: models.Provider.by_kind.query("provider", **kw), params)


def all_providers() -> list[models.Provider]:
    return list(models.Provider.by_kind.query("provider"))


def _auth_type(fields: Mapping) -> str:
    return "application_credential" if fields.get("application_credential_id") else "password"


def _secret(fields: Mapping) -> dict[str, str]:
    if _auth_type(fields) == "password":
        return {"password": fields["password"]}
    return {"application_credential_secret": fields["application_credential_secret"]}


def _check_canary_schedule(fields: Mapping) -> None:
    """A scheduled canary needs both its label (one the provider maps) and its interval: a body
    the schema takes that asks for less is 422, naming the field."""
    label, every = fields.get("canary_label"), fields.get("canary_every_hours")
    if label is None and every is not None:
        raise ApiError("unprocessable", "canary_label is required with canary_every_hours", "canary_label")
    if every is None and label is not None:
        raise ApiError("unprocessable", "canary_every_hours is required with canary_label", "canary_every_hours")
    if label is not None and label not in (fields.get("labels") or {}):
        raise ApiError("unprocessable", f"canary_label {label} is not one of the provider's labels", "canary_label")


def _check_maintenance(fields: dict) -> None:
    """Windows must end after they start (422 naming the field); they are written in UTC, earliest
    first, without those already ended."""
    windows = list(fields.get("maintenance") or [])
    wrong = maintenance.problem(windows)
    if wrong:
        raise ApiError("unprocessable", wrong, "maintenance")
    fields["maintenance"] = maintenance.pruned(windows, timeutil.now())


def _written(labels: dict) -> dict:
    """Label mappings as they are written: one that does not say when it is ready is ready once
    its sshd answers (ACTIVE alone is not ready, REAL-CLOUDS.md). Labels stored before this was the
    default have no `ready`, and keep behaving as `active` (the watcher reads them so)."""
    return {label: {**mapping, "ready": mapping.get("ready", reach.READY_SSH)} for label, mapping in labels.items()}


def create(body: dict) -> models.Provider:
    """Register a provider from a body that PROVIDER_CREATE accepted (credentials included)."""
    fields = {**schemas.PROVIDER_DEFAULTS, **{k: v for k, v in body.items() if v is not None}}
    fields["labels"] = _written(fields["labels"])
    _check_canary_schedule(fields)
    _check_maintenance(fields)
    name = fields["name"]
    if models.Provider.count(name) > 0:
        raise ApiError("conflict", f"provider {name} already exists", "name")
    arn, version = credentials.store(name, _secret(fields))
    now = timeutil.now_iso()
    provider = models.Provider(
        name,
        auth_type=_auth_type(fields),
        secret_arn=arn,
        secret_version=version,
        created_at=now,
        updated_at=now,
        **{k: fields.get(k) for k in _PLAIN_FIELDS},
    )
    try:
        provider.save(condition=models.Provider.name.does_not_exist())
    except PutError as error:
        if models.is_conditional_failure(error):
            raise ApiError("conflict", f"provider {name} already exists", "name") from None
        raise
    return provider


def update(name: str, patch: dict) -> models.Provider:
    """Apply a partial change that PROVIDER_PATCH accepted. A null resets a field to its default (or clears it)."""
    provider = get(name)
    if patch.get("labels"):
        patch = {**patch, "labels": _written(patch["labels"])}
    current = {k: getattr(provider, k) for k in _PLAIN_FIELDS}
    current["labels"] = provider.labels.as_dict()
    current["maintenance"] = list(provider.maintenance or [])
    # Switching auth type drops the other type's fields; the secret is re-entered with it.
    if any(k in patch for k in schemas.APP_CREDENTIAL_FIELDS):
        current.update(username=None, password=None)
    elif any(k in patch for k in schemas.PASSWORD_FIELDS):
        current.update(application_credential_id=None, application_credential_secret=None)
    merged = {**current, **{k: schemas.PROVIDER_DEFAULTS.get(k) if v is None else v for k, v in patch.items()}}
    kind = _auth_type(merged)
    secret_field = "password" if kind == "password" else "application_credential_secret"
    rotating = secret_field in patch
    # A well-formed change the stored provider cannot take (it would be left without a whole
    # credential) is 422, naming the field: the same body may suit another provider.
    if not rotating:
        if kind != provider.auth_type:
            raise ApiError(
                "unprocessable", f"{secret_field} is required when changing the kind of credential", secret_field
            )
        merged[secret_field] = "(kept)"  # the stored secret stays; only presence is checked here
    try:
        schemas.check_provider(merged)
        _check_canary_schedule(merged)
        _check_maintenance(merged)
    except ApiError as error:
        raise ApiError("unprocessable", error.message, error.field) from None
    actions = [getattr(models.Provider, k).set(merged.get(k)) for k in _PLAIN_FIELDS if k in merged]
    actions += [models.Provider.auth_type.set(kind), models.Provider.updated_at.set(timeutil.now_iso())]
    if rotating:
        arn, version = credentials.store(name, _secret(merged))
        actions += [models.Provider.secret_arn.set(arn), models.Provider.secret_version.set(version)]
    try:
        # A condition of our own: a provider deleted meanwhile raises, and PATCH answers 404.
        provider.update(actions=actions, condition=models.Provider.name.exists())
    except UpdateError as error:
        if not models.is_conditional_failure(error):
            raise
        # Deleted while we changed it: the secret we just stored would outlive it.
        if rotating and models.Provider.count(name) == 0:
            credentials.delete(name)
        raise not_found(f"provider {name}") from None
    return provider


def delete(name: str) -> None:
    provider = get(name)
    # One key-conditioned read per live state: a filter would page through every ended instance.
    for state in models.LIVE_STATES:
        live = models.Instance.by_provider_state.query(name, models.Instance.state == state, limit=1)
        if next(iter(live), None) is not None:
            raise ApiError("conflict", f"provider {name} still has {state} instances; delete them first")
    provider.delete()
    credentials.delete(provider.name)


def offering(label: str) -> list[models.Provider]:
    """Enabled providers that map `label`."""
    return [p for p in all_providers() if p.enabled and label in p.labels.as_dict()]


def check(name: str) -> models.Provider:
    """A health check now, and a look at the labels' settings against what the account sees
    (problems a launch would otherwise meet: a label with no network where there are several)."""
    from chalicelib import health  # imports openstacksdk: kept off the cold path of other routes

    provider = get(name)
    if health.check(provider):
        health.check_setup(provider)
    return provider


def boot_canary(name: str, label: str) -> models.Provider:
    """Start a canary boot of `label` on the provider (it runs on; see canary.py)."""
    provider = get(name)
    canary.start(provider, label)
    provider.refresh(consistent_read=True)
    return provider
