"""Property-based fuzzing of the whole API from the document it serves at /openapi.json.

Schemathesis generates valid and invalid calls for every operation and checks each answer: no
5xx, a documented status, a documented content type, and a body that matches the documented
schema (for errors, the error shape). Runs are deterministic, so a failure reproduces.
"""

from __future__ import annotations

import base64
import os
import re
import struct
import zoneinfo

import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

import app as app_module
from chalicelib import openapi, schemas
from chalicelib.settings import settings
from tests.conftest import ADMIN_KEY

EXAMPLES_PER_OPERATION = int(os.environ.get("OMS_FUZZ_EXAMPLES", "40"))
# Where a generated provider may point: a closed port on this machine, never another host.
SAFE_AUTH_URL = "http://127.0.0.1:9/identity/v3"
SAFE_CALLBACK_URL = "http://127.0.0.1:9/callback"


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "base-url": f"http://{settings.host}:{settings.port}",
            "headers": {"Authorization": f"Bearer {ADMIN_KEY}"},
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
            },
            "checks": {
                # Not our contract: API Gateway (and chalice local) answer unknown methods itself.
                "unsupported_method": {"enabled": False},
                # Our contract is the opposite: a deleted request or instance stays readable, with
                # its state (DELETING, then DELETED) and history (API.md), so users see what ended.
                "use_after_free": {"enabled": False},
                # 422 is a valid call the current state refuses (a label no provider offers).
                "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]},
                # Invalid data may also be too large: 413 is how that is refused.
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "403", "404", "409", "413", "422"],
                },
            },
        }
    )


def _ed25519_line(raw: bytes) -> str:
    blob = b"".join(struct.pack(">I", len(part)) + part for part in (b"ssh-ed25519", raw))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} fuzz@example"


# What the document calls format `openssh-public-key`: real key lines with random key bytes.
schemathesis.openapi.format("openssh-public-key", st.binary(min_size=32, max_size=32).map(_ed25519_line))
# What it calls format `iana-time-zone`: the tz database's names.
schemathesis.openapi.format("iana-time-zone", st.sampled_from(sorted(zoneinfo.available_timezones())))


# The document is the one the app serves (test_the_fuzzed_document_is_the_served_one); it is
# loaded at collection time, before the stack is up, so each operation becomes its own test.
schema = schemathesis.openapi.from_dict(openapi.document(app_module.api.declared.values()), config=_config())


@schema.hook
def map_body(context, body):
    # A generated provider must not send the sweeper to an address off this machine.
    # Only valid URLs are replaced: an invalid one is the point of a negative case.
    url = body.get("auth_url") if isinstance(body, dict) else None
    if isinstance(url, str) and re.search(schemas.HTTP_URL_PATTERN, url):
        body["auth_url"] = SAFE_AUTH_URL
    _safe_callback(body)
    return body


def _safe_callback(body) -> None:
    # A request's callback URL the schema allows may still be refused (400) for where its host
    # resolves (API.md, Callbacks): a rule about the world, not the document.
    url = body.get("callback_url") if isinstance(body, dict) else None
    if isinstance(url, str) and re.search(schemas.HTTP_URL_PATTERN, url):
        body["callback_url"] = SAFE_CALLBACK_URL


@schema.hook
def map_case(context, case):
    # A cursor is opaque: only one this API returned is valid, so valid calls start at page one.
    if case.meta and case.meta.generation.mode == GenerationMode.POSITIVE and case.query:
        case.query.pop("next", None)
    if case.meta and case.meta.generation.mode == GenerationMode.POSITIVE:
        _safe_callback(case.body)  # the coverage phase's cases do not pass through map_body
    return case


@schema.hook
def filter_case(context, case):
    # Methods the operation does not have are answered by the front door (API Gateway, or chalice
    # local's HTTP server with a 501), never by the app; everything else about a case may be wrong.
    return case.method.upper() == case.operation.method.upper()


def test_the_fuzzed_document_is_the_served_one(admin_api):
    assert admin_api.get("/openapi.json", key=None).json() == openapi.document(app_module.api.declared.values())


@schema.parametrize()
def test_every_operation_answers_as_documented(stack, admin_api, case):
    case.call_and_validate()


# The stateful phase: sequences of calls where one answer feeds the next call's inputs (the links
# schemathesis infers from the document: a created request's id into its instances' listing, a
# listed provider's name into its path, ...). It runs on schemathesis' own engine, which knows that
# replaying a sequence against a stack whose state has moved on draws other steps.
def _stateful_schema():
    config = _config()
    document = openapi.document(app_module.api.declared.values())
    stateful = schemathesis.openapi.from_dict(document, config=config)
    for hook in (map_body, map_case, filter_case):
        stateful.hook(hook)
    phases = stateful.config.phases
    for phase in (phases.examples, phases.coverage, phases.fuzzing):
        phase.enabled = False
    phases.stateful.enabled = True
    phases.stateful.max_steps = 6
    return stateful


def test_call_sequences_answer_as_documented(stack, admin_api):
    from schemathesis.engine import Status, events, from_schema

    problems, scenarios = [], 0
    for event in from_schema(_stateful_schema()).execute():
        if isinstance(event, events.ScenarioFinished) and event.phase.name == "STATEFUL_TESTING":
            scenarios += 1
            if event.status in (Status.FAILURE, Status.ERROR):
                failures = [
                    (check.name, str(check.failure_info.failure), check.failure_info.code_sample)
                    for checks in event.recorder.checks.values()
                    for check in checks
                    if check.failure_info is not None
                ]
                problems.append((event.status, failures))
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(("error", str(getattr(event, "info", event))))
        elif isinstance(event, events.EngineFinished):
            problems.extend(("failure", str(f)) for f in event.failures)
    assert scenarios > 0, "the stateful phase ran no scenario"
    assert not problems, problems
