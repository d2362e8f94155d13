"""The user data a server boots with: the request's SSH key and the user's own part, as one
document every cloud accepts wherever that can be done (REAL-CLOUDS.md: some clouds refuse MIME
multipart, and one `#cloud-config` works everywhere cloud-init runs).

- key only: a `#cloud-config` with `ssh_authorized_keys`;
- key and the user's `#cloud-config`: one `#cloud-config`, the key added to theirs;
- key and a script (`#!`) or another cloud-init format: MIME multipart, the one form cloud-init
  reads both from;
- no key: the user's part as it is.
For a provider that refuses MIME multipart (ConoHa: `multipart_user_data: false`), a key and a
script become one `#cloud-config` that writes the script out and runs it (`write_files`,
`runcmd`); a key and another format cannot go there at all (NeedsMultipart).
No openstacksdk here: the API checks a `#cloud-config` when the request comes in.
"""

from __future__ import annotations

from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

CLOUD_CONFIG = "#cloud-config"
# Where a user's script is written, and run from, when it cannot be a MIME part of its own.
USER_SCRIPT = "/var/lib/cloud/oms/user-script"


class NotCloudConfig(ValueError):
    """A `#cloud-config` part that cloud-init could not read as a mapping."""


class NeedsMultipart(ValueError):
    """User data that goes with the SSH key only as MIME multipart, for a provider that refuses it."""


def parse_cloud_config(text: str) -> dict:
    """The user's `#cloud-config` as a mapping, or NotCloudConfig saying why it is not one."""
    import yaml  # only when there is one to read: the API's cold start does not pay for it

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise NotCloudConfig(f"#cloud-config is not valid YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise NotCloudConfig("#cloud-config must be a mapping of cloud-init keys")
    keys = document.get("ssh_authorized_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise NotCloudConfig("#cloud-config ssh_authorized_keys must be a list of key lines")
    return document


def _with_key(document: dict, key: str) -> str:
    """`document` as a `#cloud-config` that also authorises `key` (listed once)."""
    import yaml

    keys = list(document.get("ssh_authorized_keys", []))
    document["ssh_authorized_keys"] = keys if key in keys else [*keys, key]
    return CLOUD_CONFIG + "\n" + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def compose(ssh_public_key: str | None, user_data: str | None, *, multipart: bool = True) -> str | None:
    """What the server boots with (see the module's rules); `multipart` False for a provider that
    refuses MIME multipart, where a part that needs it raises NeedsMultipart."""
    key = ssh_public_key.strip() if ssh_public_key else None
    if not key:
        return user_data or None
    if not user_data or user_data.startswith(CLOUD_CONFIG):
        return _with_key(parse_cloud_config(user_data) if user_data else {}, key)
    if not multipart:
        if not user_data.startswith("#!"):
            first = user_data.splitlines()[0][:40]
            raise NeedsMultipart(f"user_data starting with {first!r} goes with an SSH key only as MIME multipart")
        script = {"path": USER_SCRIPT, "permissions": "0755", "content": user_data}
        return _with_key({"write_files": [script], "runcmd": [[USER_SCRIPT]]}, key)
    message = MIMEMultipart()
    message.attach(MIMEText(f"{CLOUD_CONFIG}\nssh_authorized_keys:\n  - {key}\n", "cloud-config"))
    subtype = "x-shellscript" if user_data.startswith("#!") else "plain"
    message.attach(MIMEText(user_data, subtype))
    return message.as_string()
