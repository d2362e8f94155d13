"""OpenMultiStack: the table of contents. Routes and event handlers only; the logic is in chalicelib."""

from __future__ import annotations

from chalice import Chalice, Rate, Response

# The API's imports only: the event handlers import the launch path (and openstacksdk) when they
# run, so that the API handler's cold start never pays for it.
from chalicelib import auth, fleet, openapi, providers, schemas, telemetry, web
from chalicelib.http import json_body, respond, route_errors_to_middleware, shape_errors
from chalicelib.settings import settings

if telemetry.in_lambda() or settings.log_format == "json":
    telemetry.configure_logging()

app = Chalice(app_name="openmultistack")
app.debug = False
app.register_middleware(shape_errors, "http")

# Bodies are parsed by json_body whatever the Content-Type says (curl -d sends a form type).
BODY = {"content_types": ["*/*"]}


def caller() -> auth.Caller:
    return auth.authenticate(app.current_request.headers.get("authorization"))


def admin() -> auth.Caller:
    who = caller()
    auth.require_admin(who)
    return who


def params() -> dict:
    return app.current_request.query_params or {}


def listing(items: list, cursor: str | None) -> Response:
    return respond({"items": items, "next": cursor})


# --- service -------------------------------------------------------------------------------


@app.route("/health", methods=["GET"])
def health() -> Response:
    return respond({"status": "ok"})


@app.route("/openapi.json", methods=["GET"])
def openapi_document() -> Response:
    return respond(openapi.document())


@app.route("/", methods=["GET"])
def dashboard() -> Response:
    return web.page()


@app.route("/static/{name}", methods=["GET"])
def dashboard_asset(name: str) -> Response:
    return web.asset(name)


# --- providers -----------------------------------------------------------------------------


@app.route("/providers", methods=["POST"], **BODY)
def create_provider() -> Response:
    admin()
    return respond(schemas.provider_view(providers.create(json_body(app.current_request)), admin=True), 201)


@app.route("/providers", methods=["GET"])
def list_providers() -> Response:
    who = caller()
    items, cursor = providers.list_page(params())
    return listing([schemas.provider_view(p, admin=who.is_admin) for p in items], cursor)


@app.route("/providers/{name}", methods=["GET"])
def get_provider(name: str) -> Response:
    who = caller()
    return respond(schemas.provider_view(providers.get(name), admin=who.is_admin))


@app.route("/providers/{name}", methods=["PATCH"], **BODY)
def update_provider(name: str) -> Response:
    admin()
    return respond(schemas.provider_view(providers.update(name, json_body(app.current_request)), admin=True))


@app.route("/providers/{name}", methods=["DELETE"])
def delete_provider(name: str) -> Response:
    admin()
    providers.delete(name)
    return respond(None, 204)


@app.route("/providers/{name}/check", methods=["POST"], **BODY)
def check_provider(name: str) -> Response:
    admin()
    return respond(schemas.provider_view(providers.check(name), admin=True))


# --- requests ------------------------------------------------------------------------------


@app.route("/requests", methods=["POST"], **BODY)
def create_request() -> Response:
    who = caller()
    request, instances, created = fleet.create_request(who, json_body(app.current_request))
    return respond(schemas.request_view(request, instances), 202 if created else 200)


@app.route("/requests", methods=["GET"])
def list_requests() -> Response:
    pairs, cursor = fleet.list_requests(caller(), params())
    return listing([schemas.request_view(r, i) for r, i in pairs], cursor)


@app.route("/requests/{request_id}", methods=["GET"])
def get_request(request_id: str) -> Response:
    return respond(schemas.request_view(*fleet.get_request(caller(), request_id)))


@app.route("/requests/{request_id}", methods=["DELETE"])
def delete_request(request_id: str) -> Response:
    return respond(schemas.request_view(*fleet.delete_request(caller(), request_id)), 202)


@app.route("/requests/{request_id}/extend", methods=["POST"], **BODY)
def extend_request(request_id: str) -> Response:
    who = caller()
    return respond(schemas.request_view(*fleet.extend_request(who, request_id, json_body(app.current_request))))


# --- instances -----------------------------------------------------------------------------


@app.route("/instances", methods=["GET"])
def list_instances() -> Response:
    items, cursor = fleet.list_instances(caller(), params())
    return listing([schemas.instance_view(i) for i in items], cursor)


@app.route("/instances/{instance_id}", methods=["GET"])
def get_instance(instance_id: str) -> Response:
    return respond(schemas.instance_view(fleet.get_instance(caller(), instance_id)))


@app.route("/instances/{instance_id}", methods=["DELETE"])
def delete_instance(instance_id: str) -> Response:
    return respond(schemas.instance_view(fleet.delete_instance(caller(), instance_id)), 202)


# --- API keys ------------------------------------------------------------------------------


@app.route("/keys", methods=["POST"], **BODY)
def create_key() -> Response:
    admin()
    key, secret = auth.create_key_from_body(json_body(app.current_request))
    return respond(schemas.key_view(key, secret), 201)


@app.route("/keys", methods=["GET"])
def list_keys() -> Response:
    admin()
    items, cursor = auth.list_page(params())
    return listing([schemas.key_view(k) for k in items], cursor)


@app.route("/me", methods=["GET"])
def whoami() -> Response:
    who = caller()
    return respond({"id": who.key_id, "name": who.name, "role": who.role})


@app.route("/keys/{key_id}", methods=["DELETE"])
def delete_key(key_id: str) -> Response:
    admin()
    auth.delete_key(key_id)
    return respond(None, 204)


route_errors_to_middleware(app)  # after the last route: a database that does not answer is a 503, not a 500


# --- events --------------------------------------------------------------------------------


@app.on_dynamodb_record(stream_arn=settings.instances_stream_arn, batch_size=100, starting_position="TRIM_HORIZON")
def on_instance_change(event) -> dict:
    from chalicelib import worker

    with telemetry.invocation("on_instance_change", event.context):
        failures = worker.handle(event)
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failures]}


@app.lambda_function(name="build_watcher")
def build_watcher(event, context) -> None:
    from chalicelib import watcher

    with telemetry.invocation("build_watcher", context):
        watcher.watch(event["provider"])


@app.schedule(Rate(1, unit=Rate.MINUTES))
def sweep(event) -> dict:
    from chalicelib import sweeper

    with telemetry.invocation("sweep", event.context):
        return sweeper.sweep().as_dict()
