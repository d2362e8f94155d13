"""Keystone (identity) v3 and v2.0: version discovery, token issue and validation, service catalog.

Only what keystoneauth's password, application-credential and v2.0 plugins exercise is here;
error bodies use Keystone's ``{"error": {"code", "message", "title"}}`` shape so client
exception mapping matches a real cloud.
"""

from __future__ import annotations

import uuid
from typing import Any

from sim.state import Provider, Token, domain_id, iso
from sim.web import BadBody, Request, Response, Router, Service

router = Router()

V3_UPDATED = "2023-03-01T00:00:00Z"
SERVICES = (
    # (type, name, path under the provider prefix)
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("network", "neutron", "/network"),
    ("identity", "keystone", "/identity"),
)
INTERFACES = ("public", "internal", "admin")
UNAUTHORIZED = "The request you have made requires authentication."


TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}


def error(status: int, message: str, title: str | None = None) -> Response:
    title = title or TITLES.get(status, "Error")
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Keystone uri="/identity"'
    return Response(status, {"error": {"code": status, "message": message, "title": title}}, headers)


def unauthorized(message: str = UNAUTHORIZED) -> Response:
    return error(401, message, "Unauthorized")


def bad_request(message: str) -> Response:
    return error(400, message, "Bad Request")


def _version(req: Request, vid: str, path: str, status: str) -> dict[str, Any]:
    kind = "v3" if vid.startswith("v3") else "v2.0"
    return {
        "id": vid,
        "status": status,
        "updated": V3_UPDATED,
        "links": [{"rel": "self", "href": f"{req.provider_url}/identity/{path}/"}],
        "media-types": [{"base": "application/json", "type": f"application/vnd.openstack.identity-{kind}+json"}],
    }


@router.route("GET", "", "discovery")
def versions(provider: Provider, req: Request) -> Response:
    values = [_version(req, "v3.14", "v3", "stable"), _version(req, "v2.0", "v2.0", "deprecated")]
    return Response(300, {"versions": {"values": values}})


@router.route("GET", "/v3", "discovery")
def version_v3(provider: Provider, req: Request) -> Response:
    return Response(200, {"version": _version(req, "v3.14", "v3", "stable")})


@router.route("GET", "/v2.0", "discovery")
def version_v2(provider: Provider, req: Request) -> Response:
    return Response(200, {"version": _version(req, "v2.0", "v2.0", "deprecated")})


# -- catalog ---------------------------------------------------------------
def _endpoint_id(provider: Provider, service: str, interface: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{provider.name}/{service}/{interface}").hex


def catalog_v3(provider: Provider, req: Request) -> list[dict[str, Any]]:
    region = provider.config.region
    return [
        {
            "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{provider.name}/{stype}").hex,
            "type": stype,
            "name": name,
            "endpoints": [
                {
                    "id": _endpoint_id(provider, stype, iface),
                    "interface": iface,
                    "region_id": region,
                    "region": region,
                    "url": req.provider_url + path,
                }
                for iface in INTERFACES
            ],
        }
        for stype, name, path in SERVICES
    ]


def catalog_v2(provider: Provider, req: Request) -> list[dict[str, Any]]:
    out = []
    for stype, name, path in SERVICES:
        url = req.provider_url + path + ("/v2.0" if stype == "identity" else "")
        out.append(
            {
                "type": stype,
                "name": name,
                "endpoints_links": [],
                "endpoints": [
                    {
                        "id": _endpoint_id(provider, stype, "v2"),
                        "region": provider.config.region,
                        "publicURL": url,
                        "internalURL": url,
                        "adminURL": url,
                    }
                ],
            }
        )
    return out


# -- v3 tokens -------------------------------------------------------------
def _domain_matches(provider: Provider, ref: Any, name: str) -> bool:
    if not isinstance(ref, dict):
        return False
    if "id" in ref:
        return ref["id"] == domain_id(name)
    return ref.get("name") == name


def _check_user(provider: Provider, user: Any) -> bool:
    """True if the user reference names this provider's single user."""
    if not isinstance(user, dict):
        raise BadBody("Expecting to find user in password.")
    if "id" in user:
        return user["id"] == provider.user_id
    if "name" not in user:
        raise BadBody("Expecting to find id or name in user.")
    if "domain" not in user:
        raise BadBody("Expecting to find domain in user.")
    return user["name"] == provider.config.username and _domain_matches(
        provider, user["domain"], provider.config.user_domain_name
    )


def _check_project(provider: Provider, scope: Any) -> bool:
    project = scope.get("project") if isinstance(scope, dict) else None
    if not isinstance(project, dict):
        return False
    if "id" in project:
        return project["id"] == provider.project_id
    return project.get("name") == provider.config.project_name and _domain_matches(
        provider, project.get("domain"), provider.config.project_domain_name
    )


def _authenticate_v3(provider: Provider, auth: dict[str, Any]) -> tuple[list[str], bool, bool] | None:
    """(methods, scoped, via_app_cred) for valid credentials, None for a 401."""
    identity = auth.get("identity")
    if not isinstance(identity, dict) or not isinstance(identity.get("methods"), list):
        raise BadBody("Expecting to find identity in auth.")
    methods = identity["methods"]
    scope = auth.get("scope")
    if methods == ["password"]:
        password = identity.get("password")
        user = password.get("user") if isinstance(password, dict) else None
        if not _check_user(provider, user) or user.get("password") != provider.config.password:
            return None
        if scope is None or scope == "unscoped":
            return methods, False, False
        return (methods, True, False) if _check_project(provider, scope) else None
    if methods == ["application_credential"]:
        cred = identity.get("application_credential")
        if not isinstance(cred, dict) or "secret" not in cred:
            raise BadBody("Expecting to find secret in application_credential.")
        cfg = provider.config
        if not cfg.application_credential_id or scope is not None:
            return None
        if "id" in cred:
            ok = cred["id"] == cfg.application_credential_id
        else:
            ok = cred.get("name") == (cfg.application_credential_name or cfg.application_credential_id) and (
                _check_user(provider, cred.get("user"))
            )
        if not ok or cred["secret"] != cfg.application_credential_secret:
            return None
        return methods, True, True
    return None


def token_body_v3(provider: Provider, req: Request, token: Token) -> dict[str, Any]:
    cfg = provider.config
    body: dict[str, Any] = {
        "methods": token.methods,
        "user": {
            "id": provider.user_id,
            "name": cfg.username,
            "domain": {"id": provider.user_domain_id, "name": cfg.user_domain_name},
            "password_expires_at": None,
        },
        "audit_ids": [token.id[-22:]],
        "issued_at": iso(token.issued_at, micro=True),
        "expires_at": iso(token.expires_at, micro=True),
    }
    if token.scoped:
        body["project"] = {
            "id": provider.project_id,
            "name": cfg.project_name,
            "domain": {"id": provider.project_domain_id, "name": cfg.project_domain_name},
        }
        body["is_domain"] = False
        body["roles"] = [{"id": "member", "name": "member"}, {"id": "reader", "name": "reader"}]
        body["catalog"] = catalog_v3(provider, req)
    if token.application_credential:
        body["application_credential"] = {
            "id": cfg.application_credential_id,
            "name": cfg.application_credential_name or cfg.application_credential_id,
            "restricted": True,
        }
    return {"token": body}


def _auth_section(provider: Provider, req: Request) -> dict | None:
    """The body's "auth" object (400 without one), or None while the provider fails every login."""
    body = req.json()
    auth = body.get("auth") if isinstance(body, dict) else None
    if not isinstance(auth, dict):
        raise BadBody("Expecting to find auth in request body.")
    if provider.settings.mode == "auth_fail":
        return None
    return auth


@router.route("POST", "/v3/auth/tokens", "token")
def issue_v3(provider: Provider, req: Request) -> Response:
    auth = _auth_section(provider, req)
    if auth is None:
        return unauthorized()
    result = _authenticate_v3(provider, auth)
    if result is None:
        return unauthorized()
    methods, scoped, app_cred = result
    token = provider.issue_token(methods, scoped, app_cred)
    return Response(201, token_body_v3(provider, req, token), {"X-Subject-Token": token.id})


def _subject_token(provider: Provider, req: Request) -> tuple[str | None, Response | None]:
    """The X-Subject-Token of a token call made with a valid X-Auth-Token, or the error answer."""
    if provider.check_token(req.header("X-Auth-Token")) is None:
        return None, unauthorized()
    return req.header("X-Subject-Token") or "", None


def _no_such_token(subject_id: str) -> Response:
    return error(404, f"Could not find token: {subject_id}.", "Not Found")


@router.route("GET", "/v3/auth/tokens", "token_validate")
def validate_v3(provider: Provider, req: Request) -> Response:
    subject_id, refused = _subject_token(provider, req)
    if refused is not None:
        return refused
    subject = provider.check_token(subject_id)
    if subject is None:
        return _no_such_token(subject_id)
    return Response(200, token_body_v3(provider, req, subject), {"X-Subject-Token": subject.id})


@router.route("DELETE", "/v3/auth/tokens", "token_revoke")
def revoke_v3(provider: Provider, req: Request) -> Response:
    subject_id, refused = _subject_token(provider, req)
    if refused is not None:
        return refused
    if not provider.revoke_token(subject_id):
        return _no_such_token(subject_id)
    return Response(204)


@router.route("GET", "/v3/auth/catalog", "catalog")
def get_catalog(provider: Provider, req: Request) -> Response:
    if provider.check_token(req.header("X-Auth-Token")) is None:
        return unauthorized()
    return Response(200, {"catalog": catalog_v3(provider, req)})


# -- v2.0 tokens -----------------------------------------------------------
@router.route("POST", "/v2.0/tokens", "token")
def issue_v2(provider: Provider, req: Request) -> Response:
    auth = _auth_section(provider, req)
    if auth is None:
        return unauthorized()
    cfg = provider.config
    creds = auth.get("passwordCredentials")
    if isinstance(creds, dict):
        # v2.0 only ever saw users of the default domain.
        ok = (
            provider.user_domain_id == "default"
            and creds.get("password") == cfg.password
            and (creds.get("username") == cfg.username or creds.get("userId") == provider.user_id)
        )
    elif isinstance(auth.get("token"), dict):
        ok = provider.check_token(auth["token"].get("id")) is not None
    else:
        raise BadBody("Expecting to find passwordCredentials or token in auth.")
    if not ok:
        return unauthorized()
    if "tenantId" in auth:
        scoped = auth["tenantId"] == provider.project_id
    elif "tenantName" in auth:
        scoped = auth["tenantName"] == cfg.project_name and provider.project_domain_id == "default"
    else:
        scoped = None
    if scoped is False:
        return unauthorized()
    token = provider.issue_token(["password"], bool(scoped))
    access: dict[str, Any] = {
        "token": {
            "id": token.id,
            "issued_at": iso(token.issued_at, micro=True),
            "expires": iso(token.expires_at),
            "audit_ids": [token.id[-22:]],
        },
        "user": {
            "id": provider.user_id,
            "name": cfg.username,
            "username": cfg.username,
            "roles": [{"name": "member"}],
            "roles_links": [],
        },
        "metadata": {"is_admin": 0, "roles": ["member"]},
        "serviceCatalog": [],
    }
    if scoped:
        access["token"]["tenant"] = {
            "id": provider.project_id,
            "name": cfg.project_name,
            "enabled": True,
            "description": None,
        }
        access["serviceCatalog"] = catalog_v2(provider, req)
    return Response(200, {"access": access})


# Keystone checks tokens itself (the token APIs are how you get one), so no kind needs the
# generic X-Auth-Token gate.
SERVICE = Service(
    prefix="identity",
    router=router,
    error=error,
    open_kinds=frozenset({"discovery", "token", "token_validate", "token_revoke", "catalog"}),
)
