"""Every environment variable the deployed functions read, in one place.

Defaults suit the local stack (moto on 127.0.0.1); a deployment sets them in
`.chalice/config.json` per stage. Values are read once per process: tests and the
local runner set the environment before importing `chalicelib`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    # Which installation this is: prefixes tables and secrets, and tags servers so that
    # the sweeper never touches another deployment's servers.
    deployment: str
    region: str
    # Endpoint of DynamoDB and Secrets Manager (moto locally); None means the real AWS endpoints.
    aws_endpoint: str | None
    table_prefix: str
    secrets_prefix: str
    instances_stream_arn: str
    # Local stack only.
    host: str
    port: int
    moto_port: int
    sim_port: int
    state_dir: str
    sweep_seconds: float
    bootstrap_admin_key: str | None
    default_lifetime_minutes: int
    # Deployed Lambda functions are named <app>-<stage>-<name>.
    function_prefix: str
    # Launch pipeline.
    max_attempts: int
    boot_timeout_seconds: int
    launch_stale_seconds: int
    watch_poll_seconds: float
    watch_budget_seconds: int
    openstack_timeout_seconds: float
    # The sweeper's time budget for one pass's provider calls.
    sweep_budget_seconds: float
    # The longest one OpenStack operation waits on its provider's rate limit (tokens, Retry-After).
    rate_limit_wait_seconds: float
    # The sweeper re-fires a PENDING instance only once it has waited this long.
    redrive_after_seconds: float
    # An open circuit half-opens after this long (doubling past the third failure, capped).
    circuit_cooldown_seconds: float
    # A failed delete is retried after this long, doubling with each failure (capped at 10 minutes).
    delete_retry_seconds: float
    # How long the record of a DELETED or FAILED instance is kept before DynamoDB's TTL drops it.
    keep_ended_days: int
    # "json": one JSON object per log line (always so in Lambda); "text" otherwise.
    log_format: str
    # Callbacks (callbacks.py): the `expiring` event this many minutes before a request ends, a
    # delivery's timeout, and the tries before an event is given up (backoff 1 s doubling, capped).
    callback_expiring_minutes: int = 5
    callback_timeout_seconds: float = 3.0
    callback_max_tries: int = 8
    # Callbacks to 127.0.0.1, [::1] and localhost (written so): the local stack's (moto, no AWS
    # endpoint of its own) by default, never a deployed stage's unless OMS_CALLBACK_ALLOW_LOOPBACK=1.
    callback_allow_loopback: bool = False
    # How far ahead a request's start_at may be (scheduled requests).
    schedule_max_days: int = 7

    @property
    def providers_table(self) -> str:
        return f"{self.table_prefix}providers"

    @property
    def requests_table(self) -> str:
        return f"{self.table_prefix}requests"

    @property
    def instances_table(self) -> str:
        return f"{self.table_prefix}instances"

    @property
    def keys_table(self) -> str:
        return f"{self.table_prefix}keys"

    @property
    def pools_table(self) -> str:
        return f"{self.table_prefix}pools"


def load() -> Settings:
    deployment = os.environ.get("OMS_DEPLOYMENT", "local")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    port = _int("OMS_PORT", 8000)
    # Unset means the local stack's moto; a deployed stage sets it to "" (the real AWS endpoints).
    endpoint = os.environ.get("OMS_AWS_ENDPOINT")
    if endpoint is None:
        endpoint = f"http://127.0.0.1:{_int('OMS_MOTO_PORT', port + 1)}"
    return Settings(
        deployment=deployment,
        region=region,
        aws_endpoint=endpoint or None,
        table_prefix=os.environ.get("OMS_TABLE_PREFIX", f"oms-{deployment}-"),
        secrets_prefix=os.environ.get("OMS_SECRETS_PREFIX", f"oms/{deployment}/"),
        instances_stream_arn=os.environ.get(
            "OMS_INSTANCES_STREAM_ARN",
            f"arn:aws:dynamodb:{region}:123456789012:table/oms-{deployment}-instances/stream/local",
        ),
        host=os.environ.get("OMS_HOST", "127.0.0.1"),
        port=port,
        moto_port=_int("OMS_MOTO_PORT", port + 1),
        sim_port=_int("OMS_SIM_PORT", port + 2),
        state_dir=os.environ.get("OMS_STATE_DIR", ".oms"),
        sweep_seconds=_float("OMS_SWEEP_SECONDS", 5.0),
        bootstrap_admin_key=os.environ.get("OMS_BOOTSTRAP_ADMIN_KEY") or None,
        default_lifetime_minutes=_int("OMS_DEFAULT_LIFETIME_MINUTES", 60),
        function_prefix=os.environ.get("OMS_FUNCTION_PREFIX", f"openmultistack-{deployment}-"),
        max_attempts=_int("OMS_MAX_ATTEMPTS", 10),
        boot_timeout_seconds=_int("OMS_BOOT_TIMEOUT_SECONDS", 600),
        launch_stale_seconds=_int("OMS_LAUNCH_STALE_SECONDS", 120),
        watch_poll_seconds=_float("OMS_WATCH_POLL_SECONDS", 0.5),
        watch_budget_seconds=_int("OMS_WATCH_BUDGET_SECONDS", 600),
        openstack_timeout_seconds=_float("OMS_OPENSTACK_TIMEOUT_SECONDS", 20.0),
        sweep_budget_seconds=_float("OMS_SWEEP_BUDGET_SECONDS", 25.0),
        # Below the sweep's budget: a health check that waits out a rate limit still answers in time.
        rate_limit_wait_seconds=_float("OMS_RATE_LIMIT_WAIT_SECONDS", 10.0),
        redrive_after_seconds=_float("OMS_REDRIVE_AFTER_SECONDS", 30.0),
        circuit_cooldown_seconds=_float("OMS_CIRCUIT_COOLDOWN_SECONDS", 30.0),
        delete_retry_seconds=_float("OMS_DELETE_RETRY_SECONDS", 15.0),
        keep_ended_days=_int("OMS_KEEP_ENDED_DAYS", 30),
        log_format=os.environ.get("OMS_LOG_FORMAT", "text"),
        callback_expiring_minutes=_int("OMS_CALLBACK_EXPIRING_MINUTES", 5),
        callback_timeout_seconds=_float("OMS_CALLBACK_TIMEOUT_SECONDS", 3.0),
        callback_max_tries=_int("OMS_CALLBACK_MAX_TRIES", 8),
        schedule_max_days=_int("OMS_SCHEDULE_MAX_DAYS", 7),
        callback_allow_loopback=os.environ.get("OMS_CALLBACK_ALLOW_LOOPBACK", "1" if endpoint else "0") == "1",
    )


settings = load()
