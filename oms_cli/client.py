"""The CLI's side of the REST API: where it is, which key, and calls that fail in words.

The URL and key come from `--url`/`--key`, else OMS_URL/OMS_API_KEY, else the file `oms login`
wrote (`$XDG_CONFIG_HOME/oms/config.json`, mode 0600 in a 0700 folder).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import requests


class CliError(Exception):
    """Something to tell the user in one line, and the exit status to leave with."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "oms" / "config.json"


def save_config(url: str, key: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    os.fchmod(fd, 0o600)  # also when a leftover file had another mode
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "key": key}, handle)
    os.replace(tmp, path)
    return path


def load_config() -> dict[str, str]:
    try:
        return json.loads(config_path().read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise CliError(f"{config_path()} is not valid JSON ({exc}): run `oms login` again") from None


def quote(part: str) -> str:
    """One path segment, escaped: an id like `../keys` must stay one segment."""
    return urllib.parse.quote(part, safe="")


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60.0) -> None:
        url, key = url or os.environ.get("OMS_URL"), key or os.environ.get("OMS_API_KEY")
        saved = {} if url and key else load_config()  # `oms login --url --key` must work over a bad file
        self.url = (url or saved.get("url") or "").rstrip("/")
        self.key = key or saved.get("key")
        if not self.url or not self.key:
            raise CliError("not logged in: run `oms login --url URL --key KEY` (or set OMS_URL and OMS_API_KEY)")
        if not (self.key.isascii() and self.key.isprintable()):
            raise CliError("that API key has characters no key has: check what was pasted")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.key}"

    def call(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        try:
            response = self.session.request(
                method, self.url + path, json=body, params=params or None, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.ok:
            if not isinstance(data, dict):
                what = f"{self.url} answered {method} {path} without a JSON object"
                raise CliError(f"{what}: is it OpenMultiStack's API?")
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict) or not error.get("message"):
            raise CliError(f"{method} {path}: the API answered {response.status_code} {response.reason}")
        where = f" (field {error['field']})" if error.get("field") else ""
        raise CliError(f"{error['message']}{where}")

    def get(self, path: str, **params: Any) -> Any:
        # Only options not given are left out: an empty one goes, and the API refuses it by name.
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def all(self, path: str, **params: Any) -> list[dict]:
        """Every item of a list, page after page."""
        items: list[dict] = []
        cursor = None
        while True:
            page = self.get(path, limit=500, next=cursor, **params)
            items.extend(page["items"])
            cursor = page["next"]
            if not cursor:
                return items
