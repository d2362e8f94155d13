"""Pure logic: the validator's messages, SSH key parsing, and the request's summary state."""

from __future__ import annotations

import pytest

from chalicelib import models, schemas
from chalicelib.errors import ApiError


def error_of(value, schema) -> ApiError:
    with pytest.raises(ApiError) as caught:
        schemas.validate(value, schema)
    return caught.value


def test_messages_name_the_field_and_the_rule():
    error = error_of({"label": "x", "count": 0}, schemas.REQUEST_CREATE)
    assert (error.status, error.field, error.message) == (400, "count", "count must be between 1 and 1000")
    error = error_of({"label": "x", "count": 1, "colour": 1}, schemas.REQUEST_CREATE)
    assert (error.field, error.message) == ("colour", "unknown field colour")
    error = error_of({"count": 1}, schemas.REQUEST_CREATE)
    assert (error.field, error.message) == ("label", "label is required")
    error = error_of([], schemas.REQUEST_CREATE)
    assert (error.field, error.message) == (None, "body must be an object")


def test_nested_fields_are_named_by_path():
    body = {
        "name": "p",
        "auth_url": "http://x/v3",
        "labels": {"l": {"image": "i", "flavor": "f", "security_groups": [1]}},
    }
    assert error_of(body, schemas.PROVIDER_CREATE).field == "labels.l.security_groups[0]"


def test_booleans_are_not_integers():
    assert error_of({"label": "x", "count": True}, schemas.REQUEST_CREATE).message == "count must be an integer"


@pytest.mark.parametrize(
    "url",
    ["http://identity.example.com/v3", "https://10.0.0.1:5000/v2.0", "https://[::1]:5000/identity/v3"],
)
def test_http_urls_pass(url):
    schemas.validate({"name": "p", "auth_url": url}, schemas.PROVIDER_CREATE)


@pytest.mark.parametrize(
    "key",
    [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host with spaces",
    ],
)
def test_openssh_keys_parse(key):
    schemas.check_ssh_public_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "ssh-ed25519",
        "ssh-ed25519 !!!notbase64",
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==",  # an RSA blob under an ed25519 name
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_malformed_keys_fail(key):
    with pytest.raises(ApiError) as caught:
        schemas.check_ssh_public_key(key)
    assert caught.value.field == "ssh_public_key"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "must be an http(s) URL"),
        ("ftp://host/v3", "must be an http(s) URL"),
        ("http://user:secret@host/v3", "must not carry credentials"),
        ("http://host:99999/v3", "is not a valid URL"),
        ("http://h\x08st/v3", "must match"),
        ("https://h\u0105st/v3", "must match"),
        ("http://host/v3 with space", "must match"),
    ],
)
def test_auth_urls_that_are_not_plain_http_fail_naming_why(url, message):
    error = error_of({"name": "p", "auth_url": url}, schemas.PROVIDER_CREATE)
    assert error.field == "auth_url" and message in error.message, error.message


def test_null_is_not_given_at_the_top_and_wrong_inside():
    schemas.validate({"label": "x", "count": 1, "ssh_public_key": None}, schemas.REQUEST_CREATE)
    assert error_of({"label": None, "count": 1}, schemas.REQUEST_CREATE).message == "label is required"
    nested = {"name": "p", "auth_url": "http://h/v3", "labels": {"l": {"image": "i", "flavor": "f", "network": None}}}
    assert error_of(nested, schemas.PROVIDER_CREATE).field == "labels.l.network"
    assert error_of({"auth_url": None}, schemas.PROVIDER_PATCH).field == "auth_url"


@pytest.mark.parametrize(("field", "value"), [("name", "p\n"), ("auth_url", "http://h/v3\n")])
def test_a_trailing_newline_does_not_slip_past_a_pattern(field, value):
    body = {"name": "p", "auth_url": "http://h/v3", field: value}
    assert error_of(body, schemas.PROVIDER_CREATE).field == field


def test_the_documented_ssh_key_format_is_enforced_by_the_validator():
    body = {"label": "x", "count": 1, "ssh_public_key": "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ=="}
    assert error_of(body, schemas.REQUEST_CREATE).field == "ssh_public_key"


def counts(**by_state):
    return {state: by_state.get(state, 0) for state in models.STATES}


@pytest.mark.parametrize(
    ("state_counts", "delete_requested", "expected"),
    [
        (counts(PENDING=3), False, "pending"),
        (counts(ACTIVE=1, BUILDING=2), False, "partial"),
        (counts(ACTIVE=3), False, "ready"),
        (counts(ACTIVE=2, FAILED=1), False, "failed"),
        (counts(FAILED=3), False, "failed"),
        (counts(ACTIVE=1, DELETING=2), True, "deleting"),
        (counts(DELETED=2, FAILED=1), True, "deleted"),
        (counts(DELETED=3), False, "deleted"),
        (counts(ACTIVE=2, DELETED=1), False, "partial"),
    ],
)
def test_request_state_is_derived_from_instance_states(state_counts, delete_requested, expected):
    assert schemas.request_state(3, state_counts, delete_requested) == expected
