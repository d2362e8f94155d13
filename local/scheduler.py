"""The scheduler: what EventBridge does for `@app.schedule`, every few seconds instead of minutes."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from chalicelib import timeutil

log = logging.getLogger("oms.local.scheduler")


def scheduled_event(region: str) -> dict:
    """A CloudWatch/EventBridge scheduled event, as Lambda delivers it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": timeutil.now_iso(),
        "region": region,
        "resources": [f"arn:aws:events:{region}:123456789012:rule/oms-local-sweep"],
        "detail": {},
    }


class Scheduler:
    def __init__(self, handler: Callable[[dict, Any], Any], context: Any, every_seconds: float, region: str) -> None:
        self._handler = handler
        self._context = context
        self._every = every_seconds
        self._region = region
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = threading.Lock()
        self.runs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No scheduled run starts inside this block (one under way is waited for first): lets a
        test run and measure a pass of its own."""
        with self._running:
            yield

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with self._running:
                try:
                    self._handler(scheduled_event(self._region), self._context)
                except Exception:
                    log.exception("scheduled handler failed")
                self.runs += 1
