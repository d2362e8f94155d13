"""Readiness over real TCP on 127.0.0.1: a banner, a closed port, a filtered one, not sshd."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from chalicelib import reach


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that answers each connection with `say` (None: says nothing)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    said = {"text": None}
    stop = threading.Event()
    held = []

    def serve():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            held.append(connection)
            if said["text"] is not None:
                connection.sendall(said["text"])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], said
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    server.close()


def test_an_sshd_banner_is_read(listener):
    port, said = listener
    said["text"] = b"SSH-2.0-OpenSSH_9.6 Ubuntu\r\n"
    assert reach.ssh_banner("127.0.0.1", port, timeout=2) == "SSH-2.0-OpenSSH_9.6 Ubuntu"


def test_something_that_is_not_sshd_is_not_ready(listener):
    port, said = listener
    said["text"] = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert reach.ssh_banner("127.0.0.1", port, timeout=2) is None


def test_a_filtered_port_is_not_ready_once_the_timeout_passes(listener):
    port, _ = listener  # accepts, never answers
    started = time.monotonic()
    assert reach.ssh_banner("127.0.0.1", port, timeout=0.5) is None
    assert time.monotonic() - started < 5


def test_a_closed_port_is_not_ready():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # bound, never listening: refused
    assert reach.ssh_banner("127.0.0.1", closed, timeout=2) is None


CONSOLE = """[    6.114820] cloud-init[601]: ci-info: +++++
<14>Dec  1 16:00:00 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Dec  1 16:00:00 cloud-init: 256 SHA256:abc root@vm (ED25519)
<14>Dec  1 16:00:00 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= root@vm
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@vm
-----END SSH HOST KEY KEYS-----
Ubuntu 22.04.5 LTS vm ttyS0
"""


def test_host_keys_are_read_from_the_console_that_cloud_init_wrote():
    assert reach.host_keys(CONSOLE) == [
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
    ]
    assert reach.host_keys("no keys printed yet") == []
    assert reach.host_keys(None) == []
