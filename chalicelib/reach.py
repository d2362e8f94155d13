"""Readiness: is an ACTIVE server one a user can log into? Its sshd answering with a banner.

Nova calls a server ACTIVE when the hypervisor started it; sshd comes up later (cloud-init), and
a closed security group or an address that leads nowhere never answers. nodepool calls a node
READY only after an SSH key scan; this reads the SSH banner (`SSH-2.0-...`), which needs no key
exchange, over a real TCP connection. Host keys come from the console log cloud-init writes
(`-----BEGIN SSH HOST KEY KEYS-----`), so users can trust a host without trust-on-first-use.
No openstacksdk here.
"""

from __future__ import annotations

import socket

# A label's `ready`: ACTIVE once Nova says so, or only once sshd answers (host keys read).
READY_ACTIVE, READY_SSH = "active", "ssh"
READINESS = (READY_ACTIVE, READY_SSH)
BEGIN_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
END_KEYS = "-----END SSH HOST KEY KEYS-----"
# OpenSSH's host key types (what `ssh-keyscan` and known_hosts lines carry).
_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def ssh_banner(host: str, port: int = 22, timeout: float = 3.0) -> str | None:
    """The SSH banner line the address answers with, or None: refused, filtered (no answer within
    `timeout`), reset, or something that is not sshd."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            received = b""
            while b"\n" not in received and len(received) < 256:
                chunk = connection.recv(256)
                if not chunk:
                    break
                received += chunk
    except OSError:
        return None
    line = received.split(b"\n", 1)[0].rstrip(b"\r").decode("ascii", errors="replace")
    return line if line.startswith("SSH-") else None


def host_keys(console: str | None) -> list[str]:
    """The `type base64` host key lines cloud-init printed to the console (comments dropped)."""
    if not console or BEGIN_KEYS not in console:
        return []
    block = console.split(BEGIN_KEYS, 1)[1].split(END_KEYS, 1)[0]
    keys = []
    for line in block.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in _KEY_TYPES:
            keys.append(f"{parts[0]} {parts[1]}")
    return keys
