"""Logs, metrics and traces: JSON log lines, CloudWatch embedded-metric lines, X-Ray segments.

- Logs: in Lambda (or with OMS_LOG_FORMAT=json) every record is one JSON object (Powertools'
  formatter) carrying what the call passed in `extra=`: instance, request, provider, state.
- Metrics: `metric()` writes one embedded-metric-format line per data point (Powertools'
  `single_metric`), which CloudWatch turns into metrics; outside Lambda they are only logged,
  unless OMS_METRICS=emf.
- Traces: with OMS_TRACING=on (the deployed stages, or the local stack pointed at a daemon by
  AWS_XRAY_DAEMON_ADDRESS), boto3 and the HTTP calls openstacksdk makes are traced, and
  `provider_call()` wraps each OpenStack operation in a subsegment annotated with provider,
  operation and outcome (its error class). Off, aws-xray-sdk is never imported, so the API
  handler's cold start does not pay for it. Only URLs, statuses and our annotations are
  recorded; never a body or a header, so never a secret.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

NAMESPACE = "OpenMultiStack"
log = logging.getLogger("oms.metrics")
_lock = threading.Lock()
_emf_lock = threading.Lock()  # Powertools prints each metric line: threads must not interleave them
_configured = False


def in_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ and "OMS_LOCAL" not in os.environ


def tracing() -> bool:
    return os.environ.get("OMS_TRACING", "off").lower() in ("on", "1", "true")


# --- logs --------------------------------------------------------------------------------


# The invocation being served: Lambda runs one at a time per process, so one value serves.
_invocation_id: str | None = None


class _InvocationId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _invocation_id and not hasattr(record, "lambda_request_id"):
            record.lambda_request_id = _invocation_id
        return True


def configure_logging(level: str | int | None = None) -> None:
    """JSON lines on the root logger (Lambda's handler, or a new one), once per process; each
    line of an invocation carries its Lambda request id."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    formatter = LambdaPowertoolsFormatter(service=os.environ.get("OMS_DEPLOYMENT", "local"))
    for handler in root.handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_InvocationId())
    logging.getLogger("oms").setLevel(level or os.environ.get("OMS_LOG_LEVEL", "INFO").upper())


def about(instance: Any, provider: str | None = None, to: str | None = None) -> dict[str, Any]:
    """`extra=` for a log line about an instance: which one, where, and the transition."""
    fields = {
        "instance_id": instance.id,
        "request_id": instance.request_id,
        "provider": provider or instance.provider,
        "state_from": instance.state,
    }
    if to:
        fields["state_to"] = to
    return fields


# --- metrics -----------------------------------------------------------------------------


def metric(name: str, value: float = 1, unit: str = "Count", **dimensions: str) -> None:
    """One data point, e.g. metric("Launches", provider="cloud-a", outcome="quota")."""
    dims = {"deployment": os.environ.get("OMS_DEPLOYMENT", "local"), **{k: str(v) for k, v in dimensions.items()}}
    if not (in_lambda() or os.environ.get("OMS_METRICS") == "emf"):
        log.debug("metric %s=%s %s %s", name, value, unit, dims)
        return
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with _emf_lock, single_metric(name=name, unit=MetricUnit[unit], value=value, namespace=NAMESPACE) as point:
        for key, dim in dims.items():
            point.add_dimension(name=key, value=dim)


# --- traces ------------------------------------------------------------------------------


def _recorder():
    """aws-xray-sdk's recorder, configured and patched once (only ever called with tracing on)."""
    global _configured
    from aws_xray_sdk.core import patch, xray_recorder

    with _lock:
        if not _configured:
            # Never an exception for want of a segment (a thread we did not start, a local call).
            xray_recorder.configure(context_missing="IGNORE_ERROR", sampling=False, service="openmultistack")
            patch(("botocore", "requests"))
            _configured = True
    return xray_recorder


@contextlib.contextmanager
def invocation(name: str, context: Any = None) -> Iterator[None]:
    """One function invocation (`context` is Lambda's, for its request id in the log lines).
    Lambda opens its segment itself; the local stack gets one here, as Lambda would give it,
    when tracing is on."""
    global _invocation_id
    _invocation_id = getattr(context, "aws_request_id", None)
    if not tracing() or in_lambda():
        if tracing():
            _recorder()
        yield
        return
    recorder = _recorder()
    recorder.begin_segment(name)
    try:
        yield
    finally:
        recorder.end_segment()


@contextlib.contextmanager
def provider_call(provider: str, operation: str) -> Iterator[None]:
    """A subsegment `openstack.<operation>` annotated with provider, operation and outcome."""
    if not tracing():
        yield
        return
    recorder = _recorder()
    subsegment = recorder.begin_subsegment(f"openstack.{operation}")
    outcome = "ok"
    try:
        yield
    except Exception as error:
        outcome = getattr(error, "error_class", None) or "unknown"
        raise
    finally:
        if subsegment is not None:
            subsegment.put_annotation("provider", provider)
            subsegment.put_annotation("operation", operation)
            subsegment.put_annotation("outcome", outcome)
            recorder.end_subsegment()


def carry(function: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
    """`function`, to run in another thread within the trace open here (a thread pool's workers
    start with none, and their calls would not be traced). In Lambda the worker joins the
    invocation's segment, which lasts as long as the invocation; locally it gets a segment of
    its own in the same trace, so a job that outlives its invocation (a late sweep job) never
    writes into a segment already sent."""
    if not tracing():
        return function
    recorder = _recorder()
    entity = recorder.get_trace_entity()
    if entity is None:
        return function

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        if in_lambda():
            recorder.set_trace_entity(entity)
        else:
            recorder.begin_segment(name or function.__name__, traceid=entity.trace_id, parent_id=entity.id)
        try:
            return function(*args, **kwargs)
        finally:
            if in_lambda():
                recorder.clear_trace_entities()
            else:
                recorder.end_segment()

    return run
