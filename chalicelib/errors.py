"""The API's one error type and shape: `{"error": {"code", "message", "field"?}}`."""

from __future__ import annotations

from chalice import ChaliceUnhandledError

STATUS_BY_CODE = {
    "validation_error": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "unprocessable": 422,
    "internal": 500,
    # DynamoDB or Secrets Manager does not answer (locally: moto is not running).
    "unavailable": 503,
}
CODE_BY_STATUS = {status: code for code, status in STATUS_BY_CODE.items()}

# The shape of ApiError.body(), for `/openapi.json`.
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": list(STATUS_BY_CODE)},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}


def code_for_status(status: int) -> str:
    """Our code for an HTTP status answered by a layer below our routes (Chalice, the HTTP server)."""
    return CODE_BY_STATUS.get(status, "internal" if status >= 500 else "validation_error")


# Subclassing ChaliceUnhandledError lets Chalice pass it through to our middleware, which
# shapes it; any other exception becomes `internal`.
class ApiError(ChaliceUnhandledError):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = STATUS_BY_CODE[code]
        self.message = message
        self.field = field

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError("validation_error", message, field)


def not_found(what: str) -> ApiError:
    return ApiError("not_found", f"{what} not found")
