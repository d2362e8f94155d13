"""HTTP front end: one threaded server on one port, routing ``/<provider>/<service>/...``.

This module owns the wire (parsing, keep-alive, shutdown) and the provider-wide fault
modes (hang, latency, maintenance, token gate) so the API modules never see them.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sim import control, glance, keystone, neutron, nova
from sim.config import SimConfig
from sim.listeners import ListenerHub
from sim.state import Provider
from sim.web import BadBody, Request, Response, Service

SERVICES: dict[str, Service] = {s.prefix: s for s in (keystone.SERVICE, nova.SERVICE, glance.SERVICE, neutron.SERVICE)}


class _Hang:
    """Sentinel: the request must never be answered."""


HANG = _Hang()


class SimServer:
    """All simulated providers behind one listening socket.

    ``serve(host, port)`` blocks (the CLI); ``start(host, port)`` runs in a background
    thread (tests); ``stop()`` ends both, including requests parked by hang mode.
    """

    def __init__(self, config: SimConfig, verbose: bool = False) -> None:
        self.config = config
        self.verbose = verbose
        # One hub (one selector thread) serves the simulated sshd of every provider's servers.
        self.listeners = ListenerHub()
        self.providers: dict[str, Provider] = {
            p.name: Provider(p, config.seed, self.listeners) for p in config.providers
        }
        self.stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    # -- lifecycle ------------------------------------------------------------
    def bind(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Open the listening socket (port 0 picks a free one) and return the base URL."""
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.sim = self
        return self.base_url

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server is not bound")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        if self._httpd is None:
            self.bind()
        assert self._httpd is not None
        self._serving.set()
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving.clear()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.bind(host, port)
        self.serve_forever()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL once requests can be accepted."""
        url = self.bind(host, port)
        self._thread = threading.Thread(target=self.serve_forever, name="sim-server", daemon=True)
        self._thread.start()
        self._serving.wait(10)
        return url

    def stop(self) -> None:
        """Stop accepting, release hung requests and drop idle keep-alive connections."""
        self.stopping.set()
        self.listeners.stop()
        httpd = self._httpd
        if httpd is None:
            return
        # BaseServer.shutdown() waits forever unless serve_forever is actually running.
        if self._serving.is_set():
            httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def auth_url(self, provider: str, version: str = "v3") -> str:
        if provider not in self.providers:
            raise KeyError(f"unknown provider {provider!r}")
        return f"{self.base_url}{provider}/identity/{version}"

    # -- request handling -------------------------------------------------------
    def dispatch(self, method: str, path: str, headers: Mapping[str, str], body: bytes, host: str) -> Response | _Hang:
        parsed = urlsplit(path)
        segments = [unquote(s) for s in parsed.path.split("/") if s]
        query = parse_qs(parsed.query, keep_blank_values=True)
        if segments[:1] == ["_sim"]:
            req = Request(method, segments[1:], query, headers, body, provider_url=f"http://{host}")
            return control.dispatch(self.providers, req)
        provider = self.providers.get(segments[0]) if segments else None
        if provider is None:
            known = ", ".join(self.providers)
            return Response(404, {"error": f"unknown provider in {parsed.path!r}; known providers: {known}"})
        service = SERVICES.get(segments[1]) if len(segments) > 1 else None
        if service is None:
            return Response(404, {"error": f"no such service; use one of: {', '.join(SERVICES)}"})
        req = Request(method, segments[2:], query, headers, body, provider_url=f"http://{host}/{provider.name}")
        return self._dispatch_service(provider, service, req)

    def _dispatch_service(self, provider: Provider, service: Service, req: Request) -> Response | _Hang:
        found = service.router.match(req.method, req.segments)
        kind = found.kind if found else "unknown"
        settings = provider.settings
        if settings.mode == "hang":
            provider.record_call(kind)
            return HANG
        if settings.latency_ms:
            self.stopping.wait(settings.latency_ms / 1000.0)
        if provider.over_rate():
            resp = _rate_limited(settings)
        elif settings.mode == "maintenance":
            resp = service.error(503, "The service is temporarily unavailable for maintenance.")
        elif found is None:
            resp = service.error(404, "The resource could not be found.")
        elif kind not in service.open_kinds and provider.check_token(req.header("X-Auth-Token")) is None:
            resp = service.error(401, "The request you have made requires authentication.")
        else:
            try:
                resp = found.handler(provider, req, *found.args)
            except BadBody as exc:
                resp = service.error(400, str(exc))
        provider.record_call(kind, resp.status)
        return resp


def _rate_limited(settings) -> Response:
    """Over the account's rate: OVH's 429 (every API, Keystone included), or an older Nova's 413."""
    headers = {"Retry-After": str(settings.rate_limit_retry_after)}
    if settings.rate_limit_status == 413:
        said = f"Only {settings.rate_limit_per_second:g} request(s) can be made every second."
        body = {
            "overLimit": {
                "code": 413,
                "message": "This request was rate-limited.",
                "details": said,
                "retryAfter": headers["Retry-After"],
            }
        }
        return Response(413, body, headers)
    return Response(429, {"error": {"status": "429 Too Many Requests", "message": "Rate limit exceeded"}}, headers)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many clients connect at once in the concurrency tests; a tiny backlog would drop SYNs
    # and turn into one-second client retries.
    request_queue_size = 1024
    sim: SimServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._conn_lock:
            self._connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections like with real APIs
    server_version = "OpenMultiStackSim/1.0"
    timeout = 300  # reap idle keep-alive connections eventually
    server: _HTTPServer

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        sim = self.server.sim
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "Bad request body framing")
            return
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        try:
            resp = sim.dispatch(self.command, self.path, self.headers, body, host)
        except Exception:  # noqa: BLE001 - any bug must still answer, not kill the connection
            traceback.print_exc(file=sys.stderr)
            resp = Response(500, {"error": "internal simulator error"})
        if isinstance(resp, _Hang):
            self._hang()
            return
        self._send(resp)

    def _hang(self) -> None:
        """Hold the request open until the client hangs up or the server stops."""
        sim = self.server.sim
        self.close_connection = True
        while not sim.stopping.is_set():
            try:
                readable, _, _ = select.select([self.connection], [], [], 0.2)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return  # client gave up
            except (OSError, ValueError):
                return
            if readable:
                sim.stopping.wait(0.2)  # client sent more bytes; keep ignoring it

    def _send(self, resp: Response) -> None:
        data = resp.encoded()
        try:
            self.send_response(resp.status)
            if resp.status != 204:
                self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Openstack-Request-Id", f"req-{uuid.uuid4()}")
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD" and resp.status != 204:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.sim.verbose:
            super().log_message(format, *args)
