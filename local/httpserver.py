"""The local stack's HTTP server: chalice's request handler and gateway, on a server built for bursts.

chalice's own local server keeps socketserver's listen backlog of 5: twenty clients connecting at
once already see connections reset. This one queues a burst of hundreds (each connection gets a
daemon thread), and answers what the HTTP layer refuses by itself (an unknown method, a malformed
request line) in the API's error shape instead of a bare HTML page.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any

from chalice import local as chalice_local
from chalice.config import Config

from chalicelib.errors import ApiError, code_for_status
from chalicelib.http import SECURITY_HEADERS

# The kernel caps it at net.core.somaxconn (4096 on current Linux).
LISTEN_BACKLOG = 1024


class BurstServer(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True  # a client that keeps its connection open must not hold up Ctrl-C


class ApiRequestHandler(chalice_local.ChaliceRequestHandler):
    def __init__(self, request: Any, client_address: Any, server: Any, app_object: Any, config: Config) -> None:
        self._routes = app_object.routes  # set first: the base class serves the connection in __init__
        super().__init__(request, client_address, server, app_object, config)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if hasattr(self, "do_" + self.command):
            return True
        # http.server would answer 501 (not implemented); for a resource it is 405, as Chalice
        # answers a method a known path does not serve, with the same Allow header.
        self.close_connection = True  # its body, if any, is never read
        allow = self._allowed_methods()
        self._send_api_error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            ApiError("method_not_allowed", f"Unsupported method: {self.command}"),
            {"Allow": allow} if allow else {},
        )
        return False

    def _allowed_methods(self) -> str | None:
        """The methods the path serves (as Chalice lists them), or None for an unknown path."""
        try:
            route = chalice_local.RouteMatcher(list(self._routes)).match_route(self.path).route
        except ValueError:
            return None
        return ", ".join(self._routes[route])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What http.server refuses by itself (a bad request line, headers too long), in our shape."""
        self.close_connection = True
        self._send_api_error(code, ApiError(code_for_status(code), message or HTTPStatus(code).phrase))

    def _send_api_error(self, status: int, error: ApiError, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(error.body()).encode()
        self.log_error("%d %s", status, error.message)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status >= 200 and status not in (204, 304):
            self.wfile.write(body)


def create_server(app: Any, config: Config, host: str, port: int) -> chalice_local.LocalDevServer:
    """chalice's create_local_server, with our server and handler classes."""
    # As chalice does it: the app becomes a LocalChalice, whose current_request is per thread, so
    # that many requests can run at once.
    if not isinstance(app, chalice_local.LocalChalice):
        chalice_local.CustomLocalChalice.__bases__ = (chalice_local.LocalChalice, type(app))
        app.__class__ = chalice_local.CustomLocalChalice
    return chalice_local.LocalDevServer(app, config, host, port, handler_cls=ApiRequestHandler, server_cls=BurstServer)
