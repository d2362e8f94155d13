"""Real TCP listeners that stand in for the guests' sshd: one loopback address per reachable face.

Every address a client may connect to (a server's reachable fixed address, a floating IP) is a
distinct 127.x.y.z on the host; Linux routes all of 127.0.0.0/8 to ``lo``, so binding one needs no
setup. One selector thread serves every listening socket and connection of the simulator, so a
thousand servers cost file descriptors, not threads.

What a connecting client meets is decided per connection by the owner's ``verdict`` callback:

* ``BANNER`` -- sshd is up and a security group admits the client: the SSH banner, then silence
  until the client hangs up (no key exchange is played);
* ``RESET`` -- the guest is up but sshd is not (BUILD, or ACTIVE before ``ready_seconds``): the
  connection is reset at once, as the guest kernel's RST for a closed port looks;
* ``SILENT`` -- a filtered port (no security group admits tcp/ssh_port, or a floating IP leads
  nowhere): the connection is accepted but nothing ever comes back, so a client's banner read
  times out exactly as a dropped SYN would make its connect time out. (A truly dropped SYN cannot
  be played on a listening socket: the kernel completes the handshake before accept.)
"""

from __future__ import annotations

import errno
import ipaddress
import random
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BANNER = "banner"
RESET = "reset"
SILENT = "silent"
SSH_BANNER = b"SSH-2.0-OpenSSH_9.6 simulated\r\n"
# A held connection is dropped after this long, so a client that never hangs up cannot pile them up.
HOLD_SECONDS = 120.0

# 127.1.0.0 .. 127.254.255.255: clear of 127.0.0.0/16, where the host's own services live
# (127.0.0.1, systemd-resolved's 127.0.0.53, ...).
_FIRST = int(ipaddress.IPv4Address("127.1.0.0"))
_LAST = int(ipaddress.IPv4Address("127.254.255.255"))

Verdict = Callable[[str], str]  # peer address -> BANNER | RESET | SILENT


def mapped_v6(v4: str) -> str:
    """The IPv4-mapped IPv6 form (``::ffff:127.1.2.3``) under which an IPv6 face is shown."""
    # Written out by hand: Python before 3.13 renders these as ::ffff:7f01:203, which hides the IPv4.
    return f"::ffff:{ipaddress.IPv4Address(v4)}"


def _raise_fd_limit() -> None:
    # Two sockets per server add up in big runs; the hard limit is usually far above the soft one.
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ValueError, OSError):
        pass


@dataclass
class _Listener:
    address: str
    port: int
    sock: socket.socket
    verdict: Verdict
    connections: set[socket.socket] = field(default_factory=set)


class ListenerHub:
    """All listening sockets of one simulator, served by one lazily started selector thread.

    ``open`` binds in the caller's thread (so address clashes and bind errors are known at once)
    and hands the socket to the loop; ``close`` and ``stop`` take effect in the loop, which owns
    every socket after registration. Addresses are drawn sequentially from a random start, so
    several simulators on one machine (parallel test workers) rarely meet, and skip on EADDRINUSE.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = random.SystemRandom().randrange(_FIRST, _LAST)
        self._listeners: dict[str, _Listener] = {}
        self._pending: list[tuple[str, object]] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._held: dict[socket.socket, tuple[_Listener, float]] = {}
        self._bound: set[str] = set()  # what callers see; the loop's own map lags by a wake-up
        self._stopped = False

    # -- addresses ------------------------------------------------------------
    def _candidate(self) -> str:
        while True:
            value = self._next
            self._next = _FIRST if value >= _LAST else value + 1
            if value & 0xFF not in (0, 255):
                return str(ipaddress.IPv4Address(value))

    def reserve(self) -> str:
        """An unused loopback address, without a listener (for a floating IP before it can be bound)."""
        with self._lock:
            return self._candidate()

    # -- lifecycle of listeners ------------------------------------------------------
    def open(self, port: int, verdict: Verdict, address: str | None = None) -> tuple[str, str | None]:
        """Bind a listener on a fresh loopback address (or ``address``); returns (address, error).

        A bind that fails for lack of privilege or descriptors does not fail the API call that
        made the server: the address is still shown, and the error is reported so tests see it.
        """
        with self._lock:
            if self._stopped:
                return address or self._candidate(), "simulator stopped"
            self._ensure_loop()
            tries = 1 if address else 64
            last_error = None
            for _ in range(tries):
                candidate = address or self._candidate()
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((candidate, port))
                    sock.listen(64)
                    sock.setblocking(False)
                except OSError as exc:
                    sock.close()
                    last_error = f"cannot listen on {candidate}:{port}: {exc.strerror or exc}"
                    if exc.errno == errno.EADDRINUSE and not address:
                        continue
                    return candidate, last_error
                self._pending.append(("open", _Listener(candidate, port, sock, verdict)))
                self._bound.add(candidate)
                self._wake()
                return candidate, None
            return candidate, last_error

    def close(self, addresses: list[str]) -> None:
        """Stop listening on ``addresses`` and drop their connections (the server or floating IP is gone).

        Returns once the loop has closed them, so a client connecting right after the DELETE is
        refused rather than accepted by a socket about to go. Never call it holding a lock that a
        verdict takes: the loop may be waiting for that lock.
        """
        done = threading.Event()
        with self._lock:
            wanted = [a for a in addresses if a in self._bound]
            if self._thread is None or not wanted:
                return
            self._bound.difference_update(wanted)
            self._pending.append(("close", (wanted, done)))
            self._wake()
            loop = self._thread
        if loop is not threading.current_thread():
            done.wait(5)

    def addresses(self) -> set[str]:
        """Addresses with a live listener."""
        with self._lock:
            return set(self._bound)

    def stop(self) -> None:
        """Close every listener and connection and end the loop thread."""
        with self._lock:
            self._stopped = True
            self._bound.clear()
            thread = self._thread
            if thread is None:
                return
            self._pending.append(("stop", None))
            self._wake()
        if thread is not threading.current_thread():
            thread.join(10)

    # -- the loop -----------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._thread is not None:
            return
        _raise_fd_limit()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="sim-listeners", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        assert self._wake_w is not None
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def _run(self) -> None:
        assert self._selector is not None and self._wake_r is not None
        selector = self._selector
        running = True
        while running:
            timeout = 1.0 if self._held else None
            for key, _ in selector.select(timeout):
                data = key.data
                if data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    running = self._apply_pending()
                elif isinstance(data, _Listener):
                    self._accept(data)
                else:
                    self._drain(key.fileobj)  # type: ignore[arg-type]
            self._expire_held()
        self._shutdown()

    def _apply_pending(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, []
        assert self._selector is not None
        for op, arg in pending:
            if op == "stop":
                return False
            if op == "open":
                listener = arg
                assert isinstance(listener, _Listener)
                self._listeners[listener.address] = listener
                self._selector.register(listener.sock, selectors.EVENT_READ, listener)
            elif op == "close":
                wanted, done = arg  # type: ignore[misc]
                for address in wanted:
                    listener = self._listeners.pop(address, None)
                    if listener is not None:
                        self._selector.unregister(listener.sock)
                        listener.sock.close()
                        for conn in list(listener.connections):
                            self._drop(conn)
                done.set()
        return True

    def _accept(self, listener: _Listener) -> None:
        while True:
            try:
                conn, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the client's connect already succeeded; it will time out
            try:
                verdict = listener.verdict(peer[0])
            except Exception:  # noqa: BLE001 - a verdict bug must not kill every listener
                verdict = RESET
            if verdict == RESET:
                # SO_LINGER 0 makes close() send an RST: the client sees "connection reset".
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            conn.setblocking(False)
            if verdict == BANNER:
                try:
                    conn.send(SSH_BANNER)
                except OSError:
                    conn.close()
                    continue
            listener.connections.add(conn)
            self._held[conn] = (listener, time.monotonic() + HOLD_SECONDS)
            assert self._selector is not None
            self._selector.register(conn, selectors.EVENT_READ, "conn")

    def _drain(self, conn: socket.socket) -> None:
        # Whatever the client sends is ignored; an empty read means it hung up.
        try:
            if conn.recv(65536):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        entry = self._held.pop(conn, None)
        if entry is not None:
            entry[0].connections.discard(conn)
        assert self._selector is not None
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _expire_held(self) -> None:
        if not self._held:
            return
        now = time.monotonic()
        for conn in [c for c, (_, deadline) in self._held.items() if deadline <= now]:
            self._drop(conn)

    def _shutdown(self) -> None:
        for conn in list(self._held):
            self._drop(conn)
        assert self._selector is not None
        for listener in self._listeners.values():
            listener.sock.close()
        self._listeners.clear()
        with self._lock:
            for op, arg in self._pending:
                if op == "open":
                    arg.sock.close()  # type: ignore[union-attr]
                elif op == "close":
                    arg[1].set()  # type: ignore[index]
            self._pending.clear()
        self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
