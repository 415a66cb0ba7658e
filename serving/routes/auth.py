"""OAuth2 client credentials: an API key in, a 60-minute bearer token (JWT) out; the admin's key list."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from serving.auth import AdminDep, Authenticator, Role, get_authenticator
from serving.deps import RateLimited

router = APIRouter(tags=["auth"])

FORM = "application/x-www-form-urlencoded"


class TokenOut(BaseModel):
    access_token: str
    token_type: str = Field(description="always `bearer`")
    expires_in: int = Field(description="seconds (at most 3600)")
    scope: str = Field(description="the role the token carries: operator or admin")


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="racewire"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _basic(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, _, secret = decoded.partition(":")
    return client_id or None, secret or None


@router.post("/auth/token", response_model=TokenOut, dependencies=[RateLimited],
             summary="A bearer token for an API key (OAuth2 client credentials)",
             description="Form-encoded `grant_type=client_credentials`; the API key is the client secret, sent "
                         "with HTTP Basic (`client_id:client_secret`) or as `client_secret` in the form (or in "
                         "`X-API-Key`). Optional `scope`: `operator` or `admin`, at most the key's role. The token "
                         "is a JWT (HS256) valid for `expires_in` seconds (60 minutes); send it as "
                         "`Authorization: Bearer <token>`. Errors follow RFC 6749 (`error`, `error_description`).",
             openapi_extra={"requestBody": {"required": True, "content": {FORM: {"schema": {
                 "type": "object", "required": ["grant_type"], "properties": {
                     "grant_type": {"type": "string", "enum": ["client_credentials"]},
                     "client_id": {"type": "string"}, "client_secret": {"type": "string"},
                     "scope": {"type": "string", "enum": ["operator", "admin"]}}}}}}},
             responses={400: {"description": "unsupported grant type or scope"},
                        401: {"description": "no or wrong API key"}})
async def token(request: Request) -> Any:
    auth: Authenticator = get_authenticator(request)
    body = await request.body()
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "the body must be form-encoded UTF-8 (grant_type=...)")
    grant = form.get("grant_type")
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type" if grant else "invalid_request",
                            "only grant_type=client_credentials is supported" if grant else "grant_type is missing")
    client_id, secret = _basic(request.headers.get("authorization"))
    secret = secret or form.get("client_secret") or request.headers.get("x-api-key")
    client_id = client_id or form.get("client_id") or None
    key = auth.key(secret) if secret else None
    if key is None:
        return _oauth_error(401, "invalid_client", "no valid API key: send it as the client secret (HTTP Basic, "
                                                   "or client_secret in the form)")
    role = key.role
    if form.get("scope"):
        try:
            role = Role.parse(form["scope"])
        except ValueError as exc:
            return _oauth_error(400, "invalid_scope", str(exc))
        if role > key.role:
            return _oauth_error(400, "invalid_scope", f"this key has the {key.role.label} role; it cannot get "
                                                      f"a {role.label} token")
    return JSONResponse(auth.issue(key, role, client_id), headers={"Cache-Control": "no-store"})


@router.get("/admin/keys", summary="The configured API keys: fingerprint, role and setting (never the key)")
async def keys(request: Request, _admin: AdminDep) -> dict[str, Any]:
    auth = get_authenticator(request)
    return {"keys": [{"fingerprint": k.fingerprint, "role": k.role.label, "source": k.source} for k in auth.keys],
            "token_ttl_s": auth.ttl_s, "token_secret_per_process": auth.ephemeral_secret}
