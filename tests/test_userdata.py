"""What a server boots with: one #cloud-config wherever the user's part allows it."""

from __future__ import annotations

import email

import pytest
import yaml

from chalicelib import userdata

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE4JwYB4qgKcNxbt4gJVD7n3BP9tPNHYK5NTqkFPC0Ez ci@build"


def cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n"), text
    return yaml.safe_load(text)


def test_a_key_alone_is_a_cloud_config():
    assert cloud_config(userdata.compose(KEY, None)) == {"ssh_authorized_keys": [KEY]}


def test_a_key_and_the_users_cloud_config_are_one_document_holding_both():
    mine = "#cloud-config\npackages: [htop]\nssh_authorized_keys:\n  - " + OTHER + "\nruncmd:\n  - [touch, /ready]\n"
    merged = cloud_config(userdata.compose(KEY, mine))
    assert merged == {"packages": ["htop"], "ssh_authorized_keys": [OTHER, KEY], "runcmd": [["touch", "/ready"]]}
    assert "MIME" not in userdata.compose(KEY, mine)
    assert cloud_config(userdata.compose(KEY, "#cloud-config\n"))["ssh_authorized_keys"] == [KEY]
    # The key given twice (in the request and in the user's part) is listed once.
    assert cloud_config(userdata.compose(KEY, f"#cloud-config\nssh_authorized_keys: ['{KEY}']\n")) == {
        "ssh_authorized_keys": [KEY]
    }


def test_a_script_with_a_key_is_multipart_and_each_part_keeps_its_type():
    script = "#!/bin/sh\necho hello > /tmp/hello\n"
    message = email.message_from_string(userdata.compose(KEY, script))
    parts = [(p.get_content_type(), p.get_payload(decode=True).decode()) for p in message.get_payload()]
    assert parts[0][0] == "text/cloud-config" and KEY in parts[0][1]
    assert parts[1] == ("text/x-shellscript", script)


SCRIPT = "#!/bin/sh\necho hello > /tmp/hello\n"


@pytest.mark.parametrize(
    ("mine", "expected"),
    [
        (None, {"ssh_authorized_keys": [KEY]}),
        ("#cloud-config\npackages: [htop]\n", {"packages": ["htop"], "ssh_authorized_keys": [KEY]}),
        (
            SCRIPT,
            {
                "write_files": [{"path": userdata.USER_SCRIPT, "permissions": "0755", "content": SCRIPT}],
                "runcmd": [[userdata.USER_SCRIPT]],
                "ssh_authorized_keys": [KEY],
            },
        ),
    ],
)
def test_for_a_provider_refusing_multipart_a_key_and_a_script_are_one_cloud_config(mine, expected):
    composed = userdata.compose(KEY, mine, multipart=False)
    assert "MIME" not in composed and cloud_config(composed) == expected


@pytest.mark.parametrize(
    "mine",
    ["#include\nhttps://example.org/x\n", "#include-once\nhttps://example.org/x\n", "#cloud-boothook\necho hi\n"],
)
def test_for_a_provider_refusing_multipart_a_part_that_needs_mime_with_a_key_is_refused_naming_it(mine):
    first = mine.splitlines()[0]
    with pytest.raises(userdata.NeedsMultipart, match=f"starting with '{first}'"):
        userdata.compose(KEY, mine, multipart=False)
    assert userdata.compose(None, mine, multipart=False) == mine  # without a key it goes as it is


def test_without_a_key_the_users_part_is_sent_as_it_is():
    for mine in ("#!/bin/sh\ntrue\n", "#cloud-config\npackages: [htop]\n", "#include\nhttps://example.org/x\n"):
        assert userdata.compose(None, mine) == mine
    assert userdata.compose(None, None) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("#cloud-config\npackages: [htop\n", "not valid YAML (line"),
        ("#cloud-config\n- a\n- b\n", "must be a mapping"),
        ("#cloud-config\nssh_authorized_keys: one-key\n", "must be a list"),
    ],
)
def test_a_cloud_config_cloud_init_could_not_read_is_refused_saying_why(text, why):
    with pytest.raises(userdata.NotCloudConfig, match=why.replace("(", r"\(")):
        userdata.parse_cloud_config(text)
