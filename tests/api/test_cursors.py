"""List cursors are bound to their listing, its filters and its owner, and cannot be forged."""

from __future__ import annotations

import base64
import itertools

import pytest

from tests.conftest import register_down, unique


@pytest.fixture
def listings(admin_api, user_api) -> dict[str, tuple[object, str, dict]]:
    """Each listing with at least two items: (who lists, path, filters)."""
    label = next(iter(register_down(admin_api)["labels"]))
    register_down(admin_api, labels={label: {"image": "i", "flavor": "f"}})
    other_user = admin_api.as_key(admin_api.post("/keys", json={"name": unique("u"), "role": "user"}).json()["key"])
    request_ids = []
    for api in (user_api, other_user):
        for _ in range(2):
            response = api.post("/requests", json={"label": label, "count": 2})
            assert response.status_code == 202, response.text
            request_ids.append(response.json()["id"])
    return {
        "providers": (admin_api, "/providers", {}),
        "keys": (admin_api, "/keys", {}),
        "requests": (admin_api, "/requests", {}),
        "a user's requests": (user_api, "/requests", {}),
        "another user's requests": (other_user, "/requests", {}),
        "instances": (admin_api, "/instances", {}),
        "PENDING instances": (admin_api, "/instances", {"state": "PENDING"}),
        "a label's instances": (admin_api, "/instances", {"label": label}),
        "a request's instances": (admin_api, "/instances", {"request_id": request_ids[0]}),
        "another request's instances": (admin_api, "/instances", {"request_id": request_ids[1]}),
        "a user's instances": (user_api, "/instances", {}),
        "another user's instances": (other_user, "/instances", {}),
    }


def first_cursor(api, path: str, filters: dict) -> str:
    page = api.get(path, params={**filters, "limit": 1})
    assert page.status_code == 200, page.text
    assert page.json()["next"], f"{path} {filters} has a second page"
    return page.json()["next"]


def refused(answer) -> bool:
    return answer.status_code == 400 and answer.json()["error"]["field"] == "next"


def test_a_cursor_works_only_on_the_listing_filters_and_owner_it_came_from(listings):
    cursors = {name: first_cursor(*listing) for name, listing in listings.items()}
    for name, (api, path, filters) in listings.items():
        assert api.get(path, params={**filters, "limit": 1, "next": cursors[name]}).status_code == 200, name
    for (giver, cursor), (taker, (api, path, filters)) in itertools.product(cursors.items(), listings.items()):
        if giver == taker:
            continue
        answer = api.get(path, params={**filters, "limit": 1, "next": cursor})
        assert refused(answer), (giver, taker, answer.status_code, answer.text)


def test_a_tampered_cursor_is_refused_never_a_500(listings):
    api, path, filters = listings["instances"]
    cursor = first_cursor(api, path, filters)
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged_key = raw[:16] + raw[16:].replace(b'"i-', b'"i-0', 1)  # the same signature on another key
    flipped = bytes([raw[0] ^ 1]) + raw[1:]  # another signature on the same key
    for bad in (forged_key, flipped, raw[16:], raw[:8]):
        forged = base64.urlsafe_b64encode(bad).decode().rstrip("=")
        answer = api.get(path, params={**filters, "limit": 1, "next": forged})
        assert refused(answer), (bad, answer.status_code, answer.text)
        assert "not a cursor this listing returned" in answer.json()["error"]["message"]
