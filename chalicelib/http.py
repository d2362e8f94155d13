"""HTTP plumbing shared by every route: the JSON body, responses, and the error middleware."""

from __future__ import annotations

import json
import logging
from typing import Any

from chalice import Response

from chalicelib.errors import CODE_BY_STATUS, ApiError, invalid
from chalicelib.schemas import MAX_BODY_BYTES

log = logging.getLogger("oms.http")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def json_body(request: Any) -> dict:
    """The request's body as a JSON object, or a 400/413 naming what is wrong with it."""
    raw = request.raw_body or b""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError("payload_too_large", f"request body is larger than {MAX_BODY_BYTES // 1024} KiB")
    if not raw.strip():
        raise invalid("request body must be a JSON object")
    try:
        body = json.loads(raw, parse_float=_number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    return body


def _number(text: str) -> float | int:
    """JSON Schema's reading of numbers: 5.0 is the integer 5 (every number field is an integer)."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= 2**53 else value


def respond(body: Any, status: int = 200) -> Response:
    headers = dict(SECURITY_HEADERS)
    if body is None:
        return Response(body="", status_code=status, headers=headers)
    headers["Content-Type"] = "application/json"
    return Response(body=json.dumps(body), status_code=status, headers=headers)


def shape_errors(event: Any, get_response: Any) -> Response:
    """Chalice middleware: every error leaves in the API's shape, with its status."""
    try:
        response = get_response(event)
    except ApiError as error:
        return respond(error.body(), error.status)
    except Exception:  # a middleware-level crash: never expected, never leaks a trace
        log.exception("unhandled error")
        return respond({"error": {"code": "internal", "message": "internal error"}}, 500)
    body = response.body
    # Chalice's own errors ({"Code", "Message"}, or a 500 from an unexpected exception).
    if response.status_code >= 400 and isinstance(body, dict) and "Code" in body:
        code = CODE_BY_STATUS.get(
            response.status_code, "internal" if response.status_code >= 500 else "validation_error"
        )
        message = "internal error" if code == "internal" else str(body.get("Message", ""))
        return respond({"error": {"code": code, "message": message}}, response.status_code)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
