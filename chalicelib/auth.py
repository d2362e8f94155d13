"""API keys and roles: who is calling, and may they.

A key is `oms_<id>_<secret>`; the table holds only the SHA-256 of the whole key, found by id
and compared in constant time. A key of another form (the operator's bootstrap key) gets an id
derived from its hash, so every lookup is one GetItem and never a scan.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from pynamodb.exceptions import DoesNotExist

from chalicelib import models, pages, timeutil
from chalicelib.errors import ApiError

ADMIN, USER = "admin", "user"
ROLES = (USER, ADMIN)
_KEY_FORM = re.compile(r"^oms_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class Caller:
    key_id: str
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def owner(self) -> str:
        """What this caller's requests and instances are filed under."""
        return self.key_id

    def may_see(self, owner: str) -> bool:
        return self.is_admin or owner == self.owner


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_for(key: str) -> str:
    match = _KEY_FORM.match(key)
    if match:
        return match.group(1)
    return _hash(key)[:16]


def new_key() -> tuple[str, str]:
    """A fresh (id, key) pair: 16 hex id, 256 bits of secret."""
    key_id = secrets.token_hex(8)
    return key_id, f"oms_{key_id}_{secrets.token_urlsafe(32)}"


def create_key(name: str, role: str, key: str | None = None) -> tuple[models.ApiKey, str]:
    """Store a key (a new one, or the given one for the bootstrap admin). Returns it and its text."""
    if key is None:
        key_id, key = new_key()
    else:
        key_id = key_id_for(key)
    item = models.ApiKey(key_id, name=name, role=role, key_hash=_hash(key), created_at=timeutil.now_iso())
    item.save()
    return item, key


def ensure_bootstrap_admin(key: str) -> models.ApiKey:
    """Register `key` as an admin key unless it already is (idempotent across restarts)."""
    try:
        existing = models.ApiKey.get(key_id_for(key))
        if hmac.compare_digest(existing.key_hash, _hash(key)):
            return existing
    except DoesNotExist:
        pass
    item, _ = create_key("bootstrap-admin", ADMIN, key)
    return item


def authenticate(authorization: str | None) -> Caller:
    """The caller behind an `Authorization: Bearer <key>` header, or 401."""
    if not authorization:
        raise ApiError("unauthorized", "missing Authorization header: use 'Authorization: Bearer <api-key>'")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError("unauthorized", "Authorization header must be 'Bearer <api-key>'")
    try:
        item = models.ApiKey.get(key_id_for(key))
    except DoesNotExist:
        item = None
    # Compare against a dummy when the id is unknown, so timing does not tell ids apart.
    stored = item.key_hash if item is not None else "0" * 64
    if not hmac.compare_digest(stored, _hash(key)) or item is None:
        raise ApiError("unauthorized", "unknown API key")
    return Caller(key_id=item.id, name=item.name, role=item.role)


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ApiError("forbidden", "this needs an admin key")


def list_page(params: Mapping[str, str]) -> tuple[list[models.ApiKey], str | None]:
    return pages.page("keys", lambda **kw: models.ApiKey.by_kind.query("key", **kw), params)


def delete_key(caller: Caller, key_id: str) -> None:
    """Revoke a key. Not the one making the call: an admin who revoked their own last key would be
    locked out (the stateful fuzz did just that, through GET /me then DELETE /keys/{id})."""
    if key_id == caller.key_id:
        raise ApiError("conflict", "this is the key making the call: revoke it with another admin key")
    try:
        models.ApiKey.get(key_id).delete()
    except DoesNotExist:
        raise ApiError("not_found", f"key {key_id} not found") from None
