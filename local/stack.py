"""The whole local stack in one object: moto, tables, admin key, HTTP API, stream pump, scheduler.

`python -m local` runs it until Ctrl-C; tests start it in-process on free ports.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chalicelib.settings import Settings

log = logging.getLogger("oms.local")
# The stack's own machinery (the stream pump, the scheduler, checkpoints) calls DynamoDB outside
# any invocation, so with tracing on aws-xray-sdk warns of a missing segment on every such call.
# Lambda has no such callers: there the warning would mean something, here it is noise.
logging.getLogger("aws_xray_sdk.core.recorder").setLevel(logging.ERROR)
ROOT = Path(__file__).resolve().parent.parent


def _aws_defaults() -> None:
    # moto accepts any credentials; never let a real profile's be sent anywhere from here.
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _registered(app_module: Any, kind: type) -> Any:
    """The handler the app registered for an event source of `kind` (as Lambda would invoke it)."""
    for source in app_module.app.event_sources:
        if isinstance(source, kind):
            return getattr(app_module, source.handler_string.rpartition(".")[2])
    raise LookupError(f"app.py registers no {kind.__name__}")


class LocalStack:
    def __init__(self, settings: Settings, *, moto_start_seconds: float = 120.0) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir)
        self.url = f"http://{settings.host}:{settings.port}/"
        self.moto_url = f"http://{settings.host}:{settings.moto_port}"
        self.admin_key: str | None = None
        self.pump: Any = None
        self.scheduler: Any = None
        self._moto: subprocess.Popen | None = None
        self._moto_start_seconds = moto_start_seconds
        self._http: Any = None
        self._http_thread: threading.Thread | None = None

    # --- start ---------------------------------------------------------------------------

    def start(self) -> LocalStack:
        self.start_backend()
        self._start_http()
        self._start_events()
        return self

    def start_backend(self) -> LocalStack:
        """moto with the tables and the admin key, and nothing else: what `chalice local --stage local` needs."""
        from local.statefiles import ensure_dir

        _aws_defaults()
        ensure_dir(self.state_dir)
        self._start_moto()
        from chalicelib import models

        models.ensure_tables()
        self.admin_key = self._bootstrap_admin()
        return self

    def _start_moto(self) -> None:
        recording = self.state_dir / "moto-recording.jsonl"
        self._moto = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local.motoserver",
                "--host",
                self.settings.host,
                "--port",
                str(self.settings.moto_port),
                "--recording",
                str(recording),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + self._moto_start_seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._moto.stdout], [], [], 0.5)
            if ready:
                line = self._moto.stdout.readline()
                if line:
                    log.info("moto ready (%s requests replayed)", json.loads(line)["replayed"])
                    return
            if self._moto.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"moto did not start on {self.settings.host}:{self.settings.moto_port}")

    def _bootstrap_admin(self) -> str:
        from chalicelib import auth
        from local.statefiles import read, write_private

        key = self.settings.bootstrap_admin_key
        if key is None:
            key_file = self.state_dir / "admin-key"
            key = (read(key_file) or "").strip()
            if not key:
                key = auth.new_key()[1]
                write_private(key_file, key + "\n")
        auth.ensure_bootstrap_admin(key)
        return key

    def _start_http(self) -> None:
        from chalice.config import Config

        from local.httpserver import create_server

        app_module = importlib.import_module("app")
        config = Config.create(chalice_stage="local", app_name=app_module.app.app_name, lambda_timeout=60)
        self._http = create_server(app_module.app, config, self.settings.host, self.settings.port)
        self._http_thread = threading.Thread(target=self._http.server.serve_forever, name="http", daemon=True)
        self._http_thread.start()

    def _start_events(self) -> None:
        from chalice.app import DynamoDBEventConfig, ScheduledEventConfig
        from chalice.local import LambdaContext

        from chalicelib import aws, invoke
        from local.pump import StreamPump
        from local.scheduler import Scheduler

        app_module = importlib.import_module("app")
        self.pump = StreamPump(
            dynamodb=aws.client("dynamodb"),
            streams=aws.client("dynamodbstreams"),
            table_name=self.settings.instances_table,
            handler=_registered(app_module, DynamoDBEventConfig),
            context=LambdaContext("on_instance_change", 512, max_runtime_ms=900_000),
            checkpoint=self.state_dir / "stream-positions.json",
        )
        self.pump.start()
        self.scheduler = Scheduler(
            handler=_registered(app_module, ScheduledEventConfig),
            context=LambdaContext("sweep", 512, max_runtime_ms=900_000),
            every_seconds=self.settings.sweep_seconds,
            region=self.settings.region,
        )
        self.scheduler.start()
        invoke.use_local_runner(self._run_in_thread)

    def _run_in_thread(self, name: str, payload: dict) -> None:
        """What Lambda's asynchronous invoke does: run the registered function, answer nothing."""
        from chalice.local import LambdaContext

        app_module = importlib.import_module("app")
        registered = next(f for f in app_module.app.pure_lambda_functions if f.name == name)
        function = getattr(app_module, registered.handler_string.rpartition(".")[2])

        def run() -> None:
            try:
                function(payload, LambdaContext(name, 512, max_runtime_ms=900_000))
            except Exception:
                log.exception("function %s failed", name)

        threading.Thread(target=run, name=name, daemon=True).start()

    # --- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        for part in (self.scheduler, self.pump):
            if part is not None:
                part.stop()
        if self._http is not None:
            self._http.server.shutdown()
            self._http.server.server_close()
            self._http = None
        if self._moto is not None and self._moto.poll() is None:
            self._moto.terminate()
            try:
                self._moto.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._moto.kill()
        self._moto = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
