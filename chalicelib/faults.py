"""What went wrong at a provider, in the words the rest of the code uses (DESIGN.md's error classes).

The cloud adapter maps openstacksdk's exceptions to these; the API (which never imports
openstacksdk), the lifecycle and placement read them from here.
"""

from __future__ import annotations

QUOTA, CAPACITY, AUTH, UNAVAILABLE = "quota", "capacity", "auth", "unavailable"
CONFIG, BUILD_FAILED, TIMEOUT, UNKNOWN = "config", "build_failed", "timeout", "unknown"
# ACTIVE, but its sshd never answered within the boot timeout (closed port 22, no way in, no sshd).
UNREACHABLE = "unreachable"
# 429 (or an old Nova's 413 "overLimit"): slow down; the request was not carried out.
RATE_LIMITED = "rate_limited"
ERROR_CLASSES = (QUOTA, CAPACITY, AUTH, UNAVAILABLE, CONFIG, BUILD_FAILED, TIMEOUT, UNREACHABLE, RATE_LIMITED, UNKNOWN)


class CloudError(Exception):
    """A provider call failed; `error_class` says what that means for placement."""

    def __init__(
        self, error_class: str, message: str, *, uncertain: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        # True when the request may have been carried out all the same (its answer was lost).
        self.uncertain = uncertain
        # Seconds the service asked us to wait (its `Retry-After`), when it said.
        self.retry_after = retry_after
