"""HTTP plumbing shared by every route: the JSON body, responses, and the error middleware."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from botocore import exceptions as botocore_errors
from chalice import ChaliceUnhandledError, ChaliceViewError, Response

from chalicelib.errors import ApiError, code_for_status, invalid
from chalicelib.schemas import MAX_BODY_BYTES
from chalicelib.settings import settings

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


# What a client of DynamoDB or Secrets Manager raises when nobody answers at the endpoint, or when
# it has no credentials to sign with: the backend is missing, not our code broken.
_BACKEND_MISSING = (
    botocore_errors.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
    botocore_errors.ConnectionClosedError,
    botocore_errors.ReadTimeoutError,
    botocore_errors.NoCredentialsError,
    botocore_errors.PartialCredentialsError,
    botocore_errors.CredentialRetrievalError,
)
_NO_CREDENTIALS = (
    botocore_errors.NoCredentialsError,
    botocore_errors.PartialCredentialsError,
    botocore_errors.CredentialRetrievalError,
)


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and what it wraps: pynamodb keeps botocore's exception in `cause`, `raise ... from` in
    __cause__ (not __context__: an error handled on the way is not why this one happened)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = getattr(error, "cause", None) or error.__cause__


def backend_unavailable(error: BaseException) -> ApiError | None:
    """A 503 naming what to start, when `error` comes from a backend that is not there; else None."""
    missing = next((e for e in _causes(error) if isinstance(e, _BACKEND_MISSING)), None)
    if missing is None:
        return None
    endpoint = settings.aws_endpoint
    if endpoint is None:  # deployed: AWS's own endpoints
        return ApiError("unavailable", "DynamoDB or Secrets Manager does not answer; try again shortly")
    if isinstance(missing, _NO_CREDENTIALS):
        return ApiError(
            "unavailable",
            f"no AWS credentials to reach the database at {endpoint}: run `chalice local --stage local` "
            "(its dummy credentials suit moto), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    return ApiError(
        "unavailable", f"the database at {endpoint} does not answer: start it with `make moto` (or `make run`)"
    )


class _ViewFailed(ChaliceUnhandledError):
    """Carries a view's exception (as __cause__) past Chalice to `shape_errors`."""


def reaching_middleware(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let a view's exceptions reach `shape_errors`: Chalice answers an exception from a view with
    its own 500 before any middleware sees it, so a database that does not answer would leave as
    "internal error" instead of a 503 naming what to start."""

    @functools.wraps(view)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except (ChaliceUnhandledError, ChaliceViewError):
            raise
        except Exception as error:
            raise _ViewFailed() from error

    return run


def shape_errors(event: Any, get_response: Any) -> Response:
    """Chalice middleware: every error leaves in the API's shape, with its status."""
    try:
        response = get_response(event)
    except ApiError as error:
        return respond(error.body(), error.status)
    except Exception as error:  # never leaks a trace: it goes to the log
        unavailable = backend_unavailable(error)
        if unavailable is not None:
            log.warning("%s (%s)", unavailable.message, type(list(_causes(error))[-1]).__name__)
            return respond(unavailable.body(), unavailable.status)
        log.exception("unhandled error")
        return respond({"error": {"code": "internal", "message": "internal error"}}, 500)
    body = response.body
    # Chalice's own errors ({"Code", "Message"}, or a 500 from an unexpected exception).
    if response.status_code >= 400 and isinstance(body, dict) and "Code" in body:
        code = code_for_status(response.status_code)
        message = "internal error" if code == "internal" else str(body.get("Message", ""))
        shaped = respond({"error": {"code": code, "message": message}}, response.status_code)
        # Chalice's 405 names the path's methods in Allow: keep it (and any other header it set).
        for name, value in response.headers.items():
            if name.lower() != "content-type":
                shaped.headers.setdefault(name, value)
        return shaped
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
