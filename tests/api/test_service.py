"""Health, the OpenAPI document, the landing page, and the error shape for garbage."""

from __future__ import annotations

import app as app_module


def test_health_needs_no_key(admin_api):
    response = admin_api.get("/health", key=None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_openapi_documents_every_route_of_the_app(admin_api):
    document = admin_api.get("/openapi.json", key=None).json()
    assert document["openapi"].startswith("3.")
    served = {(method, path) for path, methods in app_module.app.routes.items() for method in methods}
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert served == documented
    assert set(app_module.api.declared) == served


def test_openapi_shows_the_schemas_that_validate_bodies(admin_api):
    document = admin_api.get("/openapi.json", key=None).json()
    request_schema = document["components"]["schemas"]["RequestCreate"]
    assert request_schema["properties"]["count"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert request_schema["additionalProperties"] is False
    post = document["paths"]["/requests"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RequestCreate")
    assert {"202", "400", "401", "409", "413", "422"} <= set(post["responses"])


def test_landing_page_is_html_with_a_strict_policy(admin_api):
    response = admin_api.get("/", key=None)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "OpenMultiStack" in response.text


def test_body_over_64_kib_is_413(admin_api):
    response = admin_api.post("/requests", data=b'{"label": "' + b"x" * 70_000 + b'"}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_garbage_bodies_get_a_400_in_the_error_shape_never_a_500(admin_api):
    garbage = [b"", b"not json", b"[1, 2]", b'"text"', b"null", b"{", b"\xff\xfe", b'{"count": 1e999}']
    for path in ("/requests", "/providers", "/keys"):
        for body in garbage:
            response = admin_api.post(path, data=body)
            assert response.status_code == 400, (path, body, response.text)
            error = response.json()["error"]
            assert error["code"] == "validation_error"
            assert error["message"]


def test_form_content_type_is_still_read_as_json(admin_api, provider):
    # curl -d sends application/x-www-form-urlencoded; the body is JSON all the same.
    response = admin_api.post(
        "/requests",
        data='{"label": "ubuntu-small", "count": 1}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 202, response.text


def test_numbers_are_read_as_json_schema_reads_them(admin_api, provider):
    # 2.0 is the integer 2 (as in JSON Schema); 2.5 is not an integer.
    accepted = admin_api.post("/requests", json={"label": "ubuntu-small", "count": 2.0})
    assert accepted.status_code == 202 and accepted.json()["count"] == 2
    refused = admin_api.post("/requests", json={"label": "ubuntu-small", "count": 2.5})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "count"
    admin_api.delete(f"/requests/{accepted.json()['id']}")


def test_empty_filters_are_refused_naming_the_filter(admin_api):
    for path, name in (("/requests", "owner"), ("/instances", "provider"), ("/instances", "state")):
        response = admin_api.get(path, params={name: ""})
        assert response.status_code == 400 and response.json()["error"]["field"] == name, response.text
