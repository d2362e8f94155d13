"""List pagination: `?limit=` and an opaque `?next=` cursor over DynamoDB queries."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from pynamodb.exceptions import QueryError

from chalicelib.errors import invalid

DEFAULT_LIMIT, MAX_LIMIT = 100, 500


def encode_cursor(last_key: dict | None) -> str | None:
    if not last_key:
        return None
    raw = json.dumps(last_key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise invalid("next is not a cursor this API returned", "next") from exc
    # A cursor is a DynamoDB key: {"attr": {"S": "..."}}; anything else was not made by us.
    if not isinstance(key, dict) or not all(
        isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("S", "N") and isinstance(next(iter(v.values())), str)
        for v in key.values()
    ):
        raise invalid("next is not a cursor this API returned", "next")
    return key


def parse_limit(params: Mapping[str, str]) -> int:
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid(f"limit must be an integer between 1 and {MAX_LIMIT}", "limit")
    return int(raw)


def page(query: Callable[..., Any], params: Mapping[str, str]) -> tuple[list, str | None]:
    """Run `query(limit=..., last_evaluated_key=...)` for one page; returns (items, next cursor)."""
    limit = parse_limit(params)
    start = decode_cursor(params.get("next"))
    results = query(limit=limit, last_evaluated_key=start)
    try:
        items = list(results)
    except QueryError as error:
        # A well-formed key that is not one of this list's (DynamoDB refuses it as a start key).
        if start is not None and error.cause_response_code == "ValidationException":
            raise invalid("next is not a cursor this API returned", "next") from None
        raise
    return items, encode_cursor(results.last_evaluated_key) if len(items) >= limit else None
