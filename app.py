"""OpenMultiStack: the table of contents. Routes and event handlers only; the logic is in chalicelib.

Each route's declaration is its contract: who may call it (and the route enforces that), the body
schema that validates its body, and what it answers; `/openapi.json` documents these declarations.
"""

from __future__ import annotations

from chalice import Chalice, Rate, Response

# The API's imports only: the event handlers import the launch path (and openstacksdk) when they
# run, so that the API handler's cold start never pays for it.
from chalicelib import auth, callbacks, fleet, openapi, pools, providers, schemas, telemetry, web
from chalicelib.auth import ADMIN, USER
from chalicelib.http import respond, shape_errors
from chalicelib.routes import PUBLIC, Call, Routes
from chalicelib.settings import settings

if telemetry.in_lambda() or settings.log_format == "json":
    telemetry.configure_logging()

app = Chalice(app_name="openmultistack")
app.debug = False
app.register_middleware(shape_errors, "http")
api = Routes(app)


# --- service -------------------------------------------------------------------------------


@api.route("GET", "/health", "Liveness", role=PUBLIC, answer=schemas.HEALTH)
def health(call: Call) -> dict:
    return schemas.health_view()


@api.route("GET", "/openapi.json", "This document", role=PUBLIC)
def openapi_document(call: Call) -> dict:
    return openapi.document(api.declared.values())


@api.route("GET", "/", "The web dashboard (HTML)", role=PUBLIC, answer={"type": "string"}, media=("text/html",))
def dashboard(call: Call) -> Response:
    return web.page()


@api.route(
    "GET",
    "/static/{name}",
    "The dashboard's script and style sheet",
    role=PUBLIC,
    answer={"type": "string"},
    media=("text/javascript", "text/css"),
    errors=(404,),
)
def dashboard_asset(call: Call, name: str) -> Response:
    return web.asset(name)


# --- providers -----------------------------------------------------------------------------


@api.route(
    "POST",
    "/providers",
    "Register a provider account",
    role=ADMIN,
    body=schemas.PROVIDER_CREATE,
    status=201,
    answer=schemas.PROVIDER,
    errors=(409, 422),
)
def create_provider(call: Call) -> dict:
    return schemas.provider_view(providers.create(call.body), admin=True)


@api.route("GET", "/providers", "List providers", role=USER, answer=schemas.PROVIDER_LIST, query=schemas.LIST_QUERY)
def list_providers(call: Call) -> dict:
    items, cursor = providers.list_page(call.params)
    return schemas.list_view([schemas.provider_view(p, admin=call.caller.is_admin) for p in items], cursor)


@api.route("GET", "/providers/{name}", "Get a provider", role=USER, answer=schemas.PROVIDER)
def get_provider(call: Call, name: str) -> dict:
    return schemas.provider_view(providers.get(name), admin=call.caller.is_admin)


@api.route(
    "PATCH",
    "/providers/{name}",
    "Change a provider (credentials too)",
    role=ADMIN,
    body=schemas.PROVIDER_PATCH,
    answer=schemas.PROVIDER,
    errors=(422,),
)
def update_provider(call: Call, name: str) -> dict:
    return schemas.provider_view(providers.update(name, call.body), admin=True)


@api.route(
    "DELETE", "/providers/{name}", "Remove a provider without live instances", role=ADMIN, status=204, errors=(409,)
)
def delete_provider(call: Call, name: str) -> None:
    providers.delete(name)


@api.route(
    "POST",
    "/providers/{name}/check",
    "Run a health check now, or start a canary boot of a label (202)",
    role=ADMIN,
    body=schemas.CHECK_REQUEST,
    body_required=False,
    answer=schemas.PROVIDER,
    also=(202,),
    errors=(409, 422),
)
def check_provider(call: Call, name: str) -> dict | Response:
    if call.body.get("boot"):
        return respond(schemas.provider_view(providers.boot_canary(name, call.body["boot"]), admin=True), 202)
    return schemas.provider_view(providers.check(name), admin=True)


# --- requests ------------------------------------------------------------------------------


@api.route(
    "POST",
    "/requests",
    "Request instances",
    role=USER,
    body=schemas.REQUEST_CREATE,
    status=202,
    answer=schemas.REQUEST,
    also=(200,),  # a repeated client_token: the request it made
    errors=(409, 422),
)
def create_request(call: Call) -> Response:
    request, instances, created = fleet.create_request(call.caller, call.body)
    # A repeated client_token finds the request it made: nothing new is accepted.
    return respond(schemas.request_view(request, instances), 202 if created else 200)


@api.route(
    "GET",
    "/requests",
    "List requests",
    role=USER,
    answer=schemas.REQUEST_LIST,
    query=schemas.LIST_QUERY + schemas.OWNER_FILTER,
    errors=(403,),
)
def list_requests(call: Call) -> dict:
    pairs, cursor = fleet.list_requests(call.caller, call.params)
    return schemas.list_view([schemas.request_view(r, i) for r, i in pairs], cursor)


@api.route("GET", "/requests/{request_id}", "Get a request with its instances", role=USER, answer=schemas.REQUEST)
def get_request(call: Call, request_id: str) -> dict:
    return schemas.request_view(*fleet.get_request(call.caller, request_id))


@api.route(
    "DELETE",
    "/requests/{request_id}",
    "Delete every instance of a request",
    role=USER,
    status=202,
    answer=schemas.REQUEST,
    errors=(409,),
)
def delete_request(call: Call, request_id: str) -> dict:
    return schemas.request_view(*fleet.delete_request(call.caller, request_id))


@api.route(
    "POST",
    "/requests/{request_id}/extend",
    "Extend a request's lifetime",
    role=USER,
    body=schemas.EXTEND,
    answer=schemas.EXTENDED,
    errors=(409,),
)
def extend_request(call: Call, request_id: str) -> dict:
    return schemas.extended_view(*fleet.extend_request(call.caller, request_id, call.body))


# --- warm pools ----------------------------------------------------------------------------


@api.route("GET", "/pools", "List warm pools", role=USER, answer=schemas.POOL_LIST)
def list_pools(call: Call) -> dict:
    return schemas.list_view([schemas.pool_view(p) for p in pools.all_pools()], None)


@api.route("GET", "/pools/{label}", "Get a label's warm pool", role=USER, answer=schemas.POOL)
def get_pool(call: Call, label: str) -> dict:
    return schemas.pool_view(pools.get(label))


@api.route(
    "PUT",
    "/pools/{label}",
    "Keep instances of a label booted and idle (create or replace its warm pool)",
    role=ADMIN,
    body=schemas.POOL_PUT,
    answer=schemas.POOL,
    errors=(422,),
)
def put_pool(call: Call, label: str) -> dict:
    return schemas.pool_view(pools.put(label, call.body))


@api.route("DELETE", "/pools/{label}", "Remove a warm pool and retire its idle instances", role=ADMIN, status=204)
def delete_pool(call: Call, label: str) -> None:
    pools.delete(label)


# --- instances -----------------------------------------------------------------------------


@api.route(
    "GET",
    "/instances",
    "List instances",
    role=USER,
    answer=schemas.INSTANCE_LIST,
    query=schemas.LIST_QUERY + schemas.INSTANCE_FILTERS,
)
def list_instances(call: Call) -> dict:
    items, cursor = fleet.list_instances(call.caller, call.params)
    return schemas.list_view([schemas.instance_view(i) for i in items], cursor)


@api.route("GET", "/instances/{instance_id}", "Get an instance", role=USER, answer=schemas.INSTANCE)
def get_instance(call: Call, instance_id: str) -> dict:
    return schemas.instance_view(fleet.get_instance(call.caller, instance_id))


@api.route(
    "DELETE",
    "/instances/{instance_id}",
    "Delete an instance",
    role=USER,
    status=202,
    answer=schemas.INSTANCE,
    errors=(409,),
)
def delete_instance(call: Call, instance_id: str) -> dict:
    return schemas.instance_view(fleet.delete_instance(call.caller, instance_id))


# --- API keys ------------------------------------------------------------------------------


@api.route(
    "POST",
    "/keys",
    "Create an API key (shown once)",
    role=ADMIN,
    body=schemas.KEY_CREATE,
    status=201,
    answer=schemas.KEY,
)
def create_key(call: Call) -> dict:
    key, text = auth.create_key(call.body["name"], call.body["role"])
    return schemas.key_view(key, text, callbacks.secret_for(key.id))


@api.route(
    "GET", "/keys", "List API keys (without the keys)", role=ADMIN, answer=schemas.KEY_LIST, query=schemas.LIST_QUERY
)
def list_keys(call: Call) -> dict:
    items, cursor = auth.list_page(call.params)
    return schemas.list_view([schemas.key_view(k) for k in items], cursor)


@api.route("GET", "/me", "The key making the call: its id, name and role", role=USER, answer=schemas.KEY)
def whoami(call: Call) -> dict:
    return schemas.caller_view(call.caller, callbacks.secret_for(call.caller.key_id))


@api.route(
    "DELETE", "/keys/{key_id}", "Revoke an API key (not the one making the call)", role=ADMIN, status=204, errors=(409,)
)
def delete_key(call: Call, key_id: str) -> None:
    auth.delete_key(call.caller, key_id)


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


@app.lambda_function(name="canary_boot")
def canary_boot(event, context) -> dict | None:
    from chalicelib import canary

    with telemetry.invocation("canary_boot", context):
        return canary.run(event["provider"], event["canary"])


@app.lambda_function(name="pool_refill")
def pool_refill(event, context) -> None:
    with telemetry.invocation("pool_refill", context):
        pools.refill(event["label"])


@app.schedule(Rate(1, unit=Rate.MINUTES))
def sweep(event) -> dict:
    from chalicelib import sweeper

    with telemetry.invocation("sweep", event.context):
        return sweeper.sweep().as_dict()
