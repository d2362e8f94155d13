"""The user data a server boots with: the request's SSH key and the user's own part, as one
document every cloud accepts wherever that can be done (REAL-CLOUDS.md: some clouds refuse MIME
multipart, and one `#cloud-config` works everywhere cloud-init runs).

- key only: a `#cloud-config` with `ssh_authorized_keys`;
- key and the user's `#cloud-config`: one `#cloud-config`, the key added to theirs;
- key and a script (`#!`) or another cloud-init format: MIME multipart, the one form cloud-init
  reads both from;
- no key: the user's part as it is.
No openstacksdk here: the API checks a `#cloud-config` when the request comes in.
"""

from __future__ import annotations

from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

CLOUD_CONFIG = "#cloud-config"


class NotCloudConfig(ValueError):
    """A `#cloud-config` part that cloud-init could not read as a mapping."""


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


def compose(ssh_public_key: str | None, user_data: str | None) -> str | None:
    """What the server boots with (see the module's rules)."""
    key = ssh_public_key.strip() if ssh_public_key else None
    if not key:
        return user_data or None
    if not user_data or user_data.startswith(CLOUD_CONFIG):
        import yaml

        document = parse_cloud_config(user_data) if user_data else {}
        keys = list(document.get("ssh_authorized_keys", []))
        document["ssh_authorized_keys"] = keys if key in keys else [*keys, key]
        return CLOUD_CONFIG + "\n" + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    message = MIMEMultipart()
    message.attach(MIMEText(f"{CLOUD_CONFIG}\nssh_authorized_keys:\n  - {key}\n", "cloud-config"))
    subtype = "x-shellscript" if user_data.startswith("#!") else "plain"
    message.attach(MIMEText(user_data, subtype))
    return message.as_string()
