"""Asynchronous invocation of our own functions (Lambda `InvocationType=Event` when deployed).

The local stack installs a runner that starts the registered function in a thread instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from chalicelib import aws
from chalicelib.settings import settings

log = logging.getLogger("oms.invoke")

_local_runner: Callable[[str, dict], None] | None = None


def use_local_runner(runner: Callable[[str, dict], None] | None) -> None:
    global _local_runner
    _local_runner = runner


def invoke_async(name: str, payload: dict) -> None:
    """Start function `name` (as registered in app.py) with `payload`; do not wait for it."""
    if _local_runner is not None:
        _local_runner(name, payload)
        return
    function = f"{settings.function_prefix}{name}"
    aws.client("lambda").invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(payload).encode())
