"""API, model and lifecycle tests in-process: Chalice's own test client and moto in-process.

No HTTP server, stream pump or scheduler runs for these: a request's PENDING instances stay as
written, which is what the API promises. What needs the stream, the watchers, the sweeper, a
restart, the dashboard or the CLI lives beside, on the live local stack (tests/test_*.py). This
package runs first in a session (tests/conftest.py orders it), before any stack is started.
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from requests.structures import CaseInsensitiveDict

from tests.conftest import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]


class Answer:
    """What a test reads of an answer, as `requests.Response` offers it."""

    def __init__(self, status_code: int, headers: dict, body: bytes) -> None:
        self.status_code = status_code
        self.headers = CaseInsensitiveDict(headers)
        self.content = body or b""
        self.text = self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class InProcessApi:
    """The `Api` of tests/conftest.py, answered by the app in this process (chalice.test.Client)."""

    def __init__(self, client: Any, key: str | None) -> None:
        self.client = client
        self.key = key

    def call(self, method: str, path: str, *, key: str | None = "default", **kwargs: Any) -> Answer:
        headers = dict(kwargs.pop("headers", {}))
        key = self.key if key == "default" else key
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        body = kwargs.pop("data", None)
        if "json" in kwargs:
            body = jsonlib.dumps(kwargs.pop("json"))
            headers.setdefault("Content-Type", "application/json")
        params = kwargs.pop("params", None)
        if kwargs:
            raise TypeError(f"unsupported arguments: {sorted(kwargs)}")
        if params:
            path = f"{path}?{urlencode(params)}"
        answer = self.client.http.request(
            method, path, headers=headers, body=body.encode() if isinstance(body, str) else body or b""
        )
        return Answer(answer.status_code, answer.headers, answer.body)

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Answer:
        return self.call("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Answer:
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Answer:
        return self.call("DELETE", path, **kwargs)

    def as_key(self, key: str | None) -> InProcessApi:
        return InProcessApi(self.client, key)


@pytest.fixture(scope="package")
def aws_in_process():
    """moto in-process, with the tables and the admin key; the models and clients point at it."""
    from moto import mock_aws

    from chalicelib import auth, aws, models
    from chalicelib.settings import settings

    with mock_aws():
        aws.point_at(None)
        try:
            models.ensure_tables()
            auth.ensure_bootstrap_admin(ADMIN_KEY)
            yield
        finally:
            aws.point_at(settings.aws_endpoint)


@pytest.fixture(scope="package")
def admin_api(aws_in_process) -> InProcessApi:
    """The admin's client, in-process (overrides the live stack's for this package)."""
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app, stage_name="local", project_dir=str(ROOT)) as client:
        yield InProcessApi(client, ADMIN_KEY)
