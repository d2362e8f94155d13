"""Pure logic: the validator's messages, SSH key parsing, and the request's summary state."""

from __future__ import annotations

import pytest

from chalicelib import auth, faults, models, schemas, validator
from chalicelib.errors import ApiError

APP_CREDENTIAL = {"application_credential_id": "ac", "application_credential_secret": "s"}


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
    schemas.validate({"name": "p", "auth_url": url, **APP_CREDENTIAL}, schemas.PROVIDER_CREATE)


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


# --- every keyword a schema shows is a rule the validator applies ------------------------------


def _declared_schemas() -> list[dict]:
    """Every schema the API shows: named ones, and each route's body, answer and query parameters."""
    import app

    found = list(schemas.NAMED.values())
    for route in app.api.declared.values():
        found += [s for s in (route.body, route.answer) if s is not None]
        found += [parameter["schema"] for parameter in route.query]
    return found


def _keywords(schema: dict) -> set[str]:
    used = set(schema)
    for name, value in schema.items():
        if name in ("properties",):
            for sub in value.values():
                used |= _keywords(sub)
        elif name in ("allOf", "anyOf", "oneOf"):
            for sub in value:
                used |= _keywords(sub)
        elif isinstance(value, dict):  # items, additionalProperties, propertyNames, and any keyword yet to come
            used |= _keywords(value)
    return used


# For each keyword the validator enforces: a schema using it, a value it refuses, a value it accepts.
KEYWORD_CASES = {
    "$ref": ({"$ref": "#/components/schemas/Health"}, {"status": 1}, {"status": "ok"}),
    "type": ({"type": "integer"}, "1", 1),
    "enum": ({"enum": ["a", 1]}, True, 1),
    "minLength": ({"minLength": 2}, "a", "ab"),
    "maxLength": ({"maxLength": 1}, "ab", "a"),
    "format": ({"format": "date-time"}, "2026-11-25", "2026-11-25T17:00:00Z"),
    "pattern": ({"pattern": "^a+$"}, "a\n", "aa"),
    "minimum": ({"minimum": 1}, 0, 1),
    "maximum": ({"maximum": 1}, 2, 1),
    "minItems": ({"minItems": 1}, [], [1]),
    "maxItems": ({"maxItems": 1}, [1, 2], [1]),
    "items": ({"items": {"type": "string"}}, [1], ["x"]),
    "minProperties": ({"minProperties": 1}, {}, {"a": 1}),
    "maxProperties": ({"maxProperties": 1}, {"a": 1, "b": 2}, {"a": 1}),
    "required": ({"required": ["a"]}, {}, {"a": 1}),
    "properties": ({"properties": {"a": {"type": "string"}}}, {"a": 1}, {"a": "x", "b": 1}),
    "additionalProperties": ({"properties": {"a": {}}, "additionalProperties": False}, {"b": 1}, {"a": 1}),
    "propertyNames": ({"propertyNames": {"pattern": "^[a-z]+$"}}, {"A": 1}, {"a": 1}),
    "allOf": ({"allOf": [{"minimum": 1}, {"maximum": 2}]}, 3, 2),
    "anyOf": ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, True, 1),
    "oneOf": ({"oneOf": [{"minimum": 1}, {"maximum": 2}]}, 2, 0),
}


def test_every_keyword_our_schemas_use_is_enforced_or_a_known_annotation():
    used = set().union(*(_keywords(s) for s in _declared_schemas()))
    assert {"oneOf", "anyOf", "allOf", "propertyNames", "format"} <= used  # the walk reaches into compositions
    known = schemas.VALIDATOR.keywords | validator.ANNOTATIONS
    assert used <= known, f"keywords shown to clients but not enforced: {sorted(used - known)}"


def test_each_enforced_keyword_has_a_case_below():
    assert set(KEYWORD_CASES) == schemas.VALIDATOR.keywords


@pytest.mark.parametrize("keyword", sorted(KEYWORD_CASES))
def test_each_keyword_refuses_what_it_must_naming_the_field(keyword):
    schema, refused, accepted = KEYWORD_CASES[keyword]
    wrapper = {"type": "object", "properties": {"x": schema}}
    schemas.validate({"x": accepted}, wrapper)
    error = error_of({"x": refused}, wrapper)
    assert error.field.startswith("x") and error.field in error.message, error.message


def test_a_keyword_the_validator_does_not_know_is_refused_not_ignored():
    with pytest.raises(ValueError, match="multipleOf"):
        schemas.validate(3, {"type": "integer", "multipleOf": 2})


# --- the credential rule: the schema's oneOf, explained in words --------------------------------

CREDENTIAL_PARTS = ("username", "password", "application_credential_id", "application_credential_secret")


@pytest.mark.parametrize("project", [{}, {"project_name": "demo"}, {"project_id": "abc"}, {"project_name": None}])
@pytest.mark.parametrize("given", [[p for i, p in enumerate(CREDENTIAL_PARTS) if n >> i & 1] for n in range(16)])
def test_the_one_credential_schema_and_its_explanation_agree(given, project):
    body = {"name": "p", "auth_url": "http://h/v3", **project, **{p: "x" for p in given}}
    by_schema = schemas.VALIDATOR.matches(body, {"oneOf": list(schemas.PROVIDER_CREATE["oneOf"])})
    try:
        schemas.check_provider(body)
        by_words = True
    except ApiError:
        by_words = False
    assert by_schema == by_words
    if not by_schema:  # the error a client sees is the one in words
        assert error_of(body, schemas.PROVIDER_CREATE).message != "body matches none of the forms it may take"


def test_credential_errors_name_the_field_and_say_why():
    base = {"name": "p", "auth_url": "http://h/v3", "project_name": "demo"}
    both = {**base, "username": "u", "password": "pw", **APP_CREDENTIAL}
    error = error_of(both, schemas.PROVIDER_CREATE)
    assert (error.field, error.message) == (
        "password",
        "give either username + password or application_credential_id + application_credential_secret, not both",
    )
    error = error_of({**base, "username": "u"}, schemas.PROVIDER_CREATE)
    assert (error.field, error.message) == ("password", "password is required with this kind of credential")
    error = error_of(
        {"name": "p", "auth_url": "http://h/v3", "username": "u", "password": "pw"}, schemas.PROVIDER_CREATE
    )
    assert error.field == "project_name" and "project_name or project_id is required" in error.message


# --- answers: each view's output is what its route declares ---------------------------------

TS = "2026-11-25T17:00:00Z"


def _answer(method: str, path: str) -> dict:
    import app

    return app.api.declared[(method, path)].answer


def _provider(**fields) -> models.Provider:
    base = {
        "auth_url": "https://identity.example.com/v3",
        "auth_type": "password",
        "username": "demo",
        "project_name": "demo",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "secret_arn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:p",
        "secret_version": "v1",
        "max_instances": 5,
        "in_use": 2,
        "quota_instances": 3,
        "labels": {"ubuntu-small": {"image": "ubuntu-22.04", "flavor": "m1.small", "security_groups": ["ssh"]}},
        "health_state": models.DEGRADED,
        "checked_at": TS,
        "last_error": "slow",
        "created_at": TS,
        "updated_at": TS,
    }
    return models.Provider("p1", **{**base, **fields})


def _instance(**fields) -> models.Instance:
    base = {
        "request_id": "r-1",
        "owner": "0123456789abcdef",
        "name": "oms-1-000",
        "label": "ubuntu-small",
        "state": models.ACTIVE,
        "provider": "p1",
        "server_id": "8d1b7e1c-0000-4000-8000-000000000000",
        "addresses": {"ipv4": ["10.0.0.5", "203.0.113.7"], "ipv6": ["fd00::5"]},
        "ips": [
            models.IpAddress(addr="10.0.0.5", version=4, type="fixed", network="private"),
            models.IpAddress(addr="203.0.113.7", version=4, type="floating", network="private"),
            models.IpAddress(addr="fd00::5", version=6, type="fixed", network="private"),
        ],
        "access_ip": "203.0.113.7",
        "attempts": [models.Attempt(provider="p0", error=faults.QUOTA, message="quota exceeded", at=TS)],
        "created_at": TS,
        "active_at": TS,
        "expires_at": TS,
    }
    return models.Instance("i-1", **{**base, **fields})


def _request() -> models.Request:
    return models.Request(
        "r-1",
        owner="0123456789abcdef",
        label="ubuntu-small",
        count=2,
        lifetime_minutes=60,
        name_prefix="oms",
        body_hash="h",
        created_at=TS,
        expires_at=TS,
    )


def _views() -> list[tuple[str, str, dict]]:
    app_credential = _provider(auth_type="application_credential", username=None, application_credential_id="ac")
    unplaced = _instance(id="i-2", state=models.PENDING, provider=None, server_id=None, addresses={}, attempts=[])
    key = models.ApiKey("0123456789abcdef", name="ci", role="user", key_hash="h", created_at=TS)
    return [
        ("GET", "/providers/{name}", schemas.provider_view(_provider(), admin=True)),
        ("GET", "/providers/{name}", schemas.provider_view(app_credential, admin=True)),
        ("GET", "/providers/{name}", schemas.provider_view(_provider(region=None, quota_instances=None), admin=False)),
        ("GET", "/providers", schemas.list_view([schemas.provider_view(_provider(), admin=False)], "abc")),
        ("GET", "/instances/{instance_id}", schemas.instance_view(_instance())),
        ("GET", "/instances", schemas.list_view([schemas.instance_view(unplaced)], None)),
        ("GET", "/requests/{request_id}", schemas.request_view(_request(), [_instance(), unplaced])),
        ("GET", "/requests", schemas.list_view([schemas.request_view(_request(), [])], None)),
        (
            "POST",
            "/requests/{request_id}/extend",
            schemas.extended_view(
                _request(),
                [_instance()],
                [{"instance_id": "i-1", "provider": "p1", "start": TS, "end": TS, "note": "", "message": "m"}],
            ),
        ),
        (
            "GET",
            "/providers/{name}",
            schemas.provider_view(_provider(maintenance=[{"start": TS, "end": "2999-01-01T00:00:00Z"}]), admin=True),
        ),
        ("POST", "/keys", schemas.key_view(key, "oms_0123456789abcdef_" + "A" * 43, "whsec_" + "B" * 43)),
        ("GET", "/keys", schemas.list_view([schemas.key_view(key)], None)),
        ("GET", "/me", schemas.caller_view(auth.Caller("0123456789abcdef", "ci", auth.USER), "whsec_" + "B" * 43)),
        ("GET", "/health", schemas.health_view()),
    ]


@pytest.mark.parametrize(("method", "path", "view"), _views())
def test_each_view_matches_the_answer_its_route_declares(method, path, view):
    schemas.validate(view, _answer(method, path))


def test_an_answer_schema_refuses_a_view_that_drifted():
    view = schemas.instance_view(_instance())
    error = error_of({**view, "state": "RUNNING"}, _answer("GET", "/instances/{instance_id}"))
    assert error.field == "state"
    error = error_of({**view, "attempts": [{**view["attempts"][0], "error": "oops"}]}, schemas.INSTANCE)
    assert error.field == "attempts[0].error"
    error = error_of(schemas.list_view([{**view, "created_at": "now"}], None), schemas.INSTANCE_LIST)
    assert error.field == "items[0].created_at"
