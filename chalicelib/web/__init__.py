"""The web pages served by the app itself (no build step: plain files packaged with the code)."""

from __future__ import annotations

from pathlib import Path

from chalice import Response

from chalicelib.errors import not_found

_HERE = Path(__file__).parent
# Only our own files run and load; no inline script or style, no plugins, no framing, no <base>.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def page() -> Response:
    return Response(
        body=(_HERE / "index.html").read_text(),
        status_code=200,
        # nosniff, Referrer-Policy and Cache-Control are added to every answer by the middleware.
        headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"},
    )


# The only files served besides the page: a fixed list, so no path ever reaches the file system.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


def asset(name: str) -> Response:
    if name not in ASSETS:
        raise not_found(f"file {name}")
    return Response(
        body=(_HERE / name).read_text(),
        status_code=200,
        headers={"Content-Type": ASSETS[name], "Cache-Control": "no-cache"},
    )
