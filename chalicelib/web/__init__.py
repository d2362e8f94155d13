"""The web pages served by the app itself (no build step: plain files packaged with the code)."""

from __future__ import annotations

from pathlib import Path

from chalice import Response

_HERE = Path(__file__).parent
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


def page() -> Response:
    return Response(
        body=(_HERE / "index.html").read_text(),
        status_code=200,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
