"""List pagination: `?limit=` and an opaque, signed `?next=` cursor over DynamoDB queries."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib import credentials
from chalicelib.errors import invalid

DEFAULT_LIMIT, MAX_LIMIT = 100, 500


# A cursor is the listing's last DynamoDB key with an HMAC over the listing, its scope (the filters
# and owner that chose the query) and the key: one from another listing, other filters or another
# owner, or one edited by hand, is refused before DynamoDB sees it.
_MAC_BYTES = 16
_NOT_OURS = "next is not a cursor this listing returned (one is valid only with the listing and filters it came from)"


def _mac(listing: str, scope: Mapping[str, str], key_json: bytes) -> bytes:
    message = json.dumps([listing, sorted(scope.items())], separators=(",", ":")).encode() + b"\0" + key_json
    return hmac.new(credentials.cursor_key(), message, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_cursor(listing: str, scope: Mapping[str, str], last_key: dict | None) -> str | None:
    if not last_key:
        return None
    key_json = json.dumps(last_key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(_mac(listing, scope, key_json) + key_json).decode().rstrip("=")


def decode_cursor(listing: str, scope: Mapping[str, str], cursor: str | None) -> dict | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise invalid(_NOT_OURS, "next") from exc
    mac, key_json = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if len(mac) < _MAC_BYTES or not hmac.compare_digest(mac, _mac(listing, scope, key_json)):
        raise invalid(_NOT_OURS, "next")
    return json.loads(key_json)


def parse_limit(params: Mapping[str, str]) -> int:
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid(f"limit must be an integer between 1 and {MAX_LIMIT}", "limit")
    return int(raw)


def page(
    listing: str, query: Callable[..., Any], params: Mapping[str, str], scope: Mapping[str, str] | None = None
) -> tuple[list, str | None]:
    """Run `query(limit=..., last_evaluated_key=...)` for one page of `listing`; returns (items, next
    cursor). `scope` is what chose the query besides the listing (filters, the owner of a user's
    list): a cursor is accepted only with the very same."""
    scope = scope or {}
    limit = parse_limit(params)
    start = decode_cursor(listing, scope, params.get("next"))
    results = query(limit=limit, last_evaluated_key=start)
    items = list(results)
    return items, encode_cursor(listing, scope, results.last_evaluated_key) if len(items) >= limit else None
