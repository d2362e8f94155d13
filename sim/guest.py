"""What the guest OS shows the outside: its SSH host keys and the console log cloud-init writes.

Key material is random but framed exactly like OpenSSH's public-key wire blobs (length-prefixed
strings, base64), drawn from a generator seeded by the server id so a server's keys never change
and drawing them never shifts the provider's other random sequences. The points are not on the
curves: nothing here performs a key exchange, and format is what a host-key parser checks.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from datetime import UTC, datetime

BEGIN_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
END_KEYS = "-----END SSH HOST KEY KEYS-----"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def host_keys(server_id: str, name: str) -> list[str]:
    """The server's public host keys as ``authorized_keys`` lines (ECDSA P-256, then Ed25519)."""
    rng = random.Random(f"{server_id}:hostkeys")
    ecdsa_point = b"\x04" + rng.randbytes(64)  # uncompressed point: 0x04 || X || Y
    ecdsa = _string(b"ecdsa-sha2-nistp256") + _string(b"nistp256") + _string(ecdsa_point)
    ed25519 = _string(b"ssh-ed25519") + _string(rng.randbytes(32))
    comment = f"root@{name}"
    return [
        f"ecdsa-sha2-nistp256 {base64.b64encode(ecdsa).decode()} {comment}",
        f"ssh-ed25519 {base64.b64encode(ed25519).decode()} {comment}",
    ]


def fingerprint(key_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of an ``authorized_keys`` line."""
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def console_log(name: str, keys: list[str], started: float, ready: bool) -> str:
    """A cloud-init style boot log; the host keys and the "finished" line appear once sshd is ready."""
    stamp = datetime.fromtimestamp(started, tz=UTC)
    syslog = stamp.strftime("%b %d %H:%M:%S")
    lines = [
        "[    0.000000] Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) #45-Ubuntu SMP",
        "[    0.000000] Command line: BOOT_IMAGE=/vmlinuz-6.8.0-45-generic root=LABEL=cloudimg-rootfs ro console=ttyS0",
        "[    2.183402] EXT4-fs (vda1): mounted filesystem with ordered data mode.",
        f"[    4.512033] cloud-init[512]: Cloud-init v. 24.1.3 running 'init-local' at "
        f"{stamp:%a, %d %b %Y %H:%M:%S} +0000. Up 4.41 seconds.",
        f"[    6.020117] cloud-init[601]: Cloud-init v. 24.1.3 running 'init' at "
        f"{stamp:%a, %d %b %Y %H:%M:%S} +0000. Up 5.93 seconds.",
        "[    6.114820] cloud-init[601]: ci-info: ++++++++++++++++++++++++Net device info+++++++++++++++++++++++++",
    ]
    if not ready:
        return "\n".join(lines) + "\n"
    kinds = {"ecdsa-sha2-nistp256": "ECDSA", "ssh-ed25519": "ED25519"}
    lines += [
        f"<14>{syslog} cloud-init: #############################################################",
        f"<14>{syslog} cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
        *(f"<14>{syslog} cloud-init: 256 {fingerprint(k)} root@{name} ({kinds[k.split()[0]]})" for k in keys),
        f"<14>{syslog} cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
        f"<14>{syslog} cloud-init: #############################################################",
        BEGIN_KEYS,
        *keys,
        END_KEYS,
        f"[   12.401551] cloud-init[833]: Cloud-init v. 24.1.3 finished at {stamp:%a, %d %b %Y %H:%M:%S} +0000. "
        "Datasource DataSourceOpenStackLocal [net,ver=2].  Up 12.34 seconds",
        "",
        f"Ubuntu 22.04.5 LTS {name} ttyS0",
        "",
        f"{name} login: ",
    ]
    return "\n".join(lines) + "\n"
