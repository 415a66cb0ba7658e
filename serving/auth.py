"""Who is calling: roles, scoped API keys and OAuth2 bearer tokens (JWT).

Three roles, ordered: ``public`` (anyone: the read endpoints), ``operator`` (ingest, simulations,
strategy work whose cost grows with the request) and ``admin`` (everything; key listing). A caller
proves a role with

* an **API key** in ``X-API-Key``: ``RACEWIRE_API_KEY`` (admin) and ``RACEWIRE_API_KEYS``
  (``KEY:ROLE`` or ``sha256:HEX:ROLE`` entries). Only SHA-256 digests are kept in memory and every
  presented key is compared with every digest in constant time;
* a **bearer token** (``Authorization: Bearer ...``): a JWT (HS256, ``RACEWIRE_TOKEN_SECRET``) that
  ``POST /api/auth/token`` issues for a valid key (OAuth2 client credentials), for at most 60
  minutes, with the key's role or a lower one. A token names the key it came from, so removing a key
  (and restarting) also ends its tokens.

:class:`Authenticator` does the checking; the route dependency :func:`require` (used through
:data:`Operator`, :data:`Admin`) declares a route's role once, as its OAuth2 scope in OpenAPI:
:mod:`serving.edge` reads it from there to refuse a request *before* its body is read, and the
dependency checks it again (it is what guards requests without a body).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import APIKeyHeader, HTTPBearer, OAuth2

from schemas.settings import Settings

ALGORITHM = "HS256"
AUDIENCE = ISSUER = "racewire"
#: shortest API key and token secret accepted outside loopback
MIN_KEY_LENGTH, MIN_TOKEN_SECRET_LENGTH = 16, 32
#: values seen in examples and manifests; never accepted outside loopback
PLACEHOLDERS = frozenset({"dev-key", "replace-me", "replaceme", "change-me", "changeme", "secret", "password",
                          "test", "example", "api-key", "apikey", "none", "null"})
TOKEN_PATH = "/api/auth/token"
PRINCIPAL_SCOPE_KEY = "racewire.principal"


class Role(IntEnum):
    PUBLIC = 0
    OPERATOR = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            role = cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; expected operator or admin") from None
        if role is cls.PUBLIC:
            raise ValueError("a key for the public role is pointless: public endpoints need none")
        return role


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    via: str  # "anonymous", "api-key" or "token"


ANONYMOUS = Principal("anonymous", Role.PUBLIC, "anonymous")


@dataclass(frozen=True, slots=True)
class ApiKey:
    digest: bytes  # SHA-256 of the key
    role: Role
    source: str  # the setting it came from (for messages; never the key)

    @property
    def fingerprint(self) -> str:
        return self.digest.hex()[:12]


class AuthError(Exception):
    """Credentials that do not prove what they claim: 401 (or 403 for a role too low)."""

    def __init__(self, detail: str, status_code: int = status.HTTP_401_UNAUTHORIZED) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


WWW_AUTHENTICATE = 'Bearer realm="racewire", APIKey header="X-API-Key"'


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def weak_secret(value: str, min_length: int) -> str | None:
    """Why ``value`` is no secret (empty, a placeholder, too short), or None."""
    if not value:
        return "it is empty"
    if value.strip().lower() in PLACEHOLDERS:
        return f"{value!r} is a placeholder"
    if len(value) < min_length:
        return f"it has {len(value)} characters (at least {min_length})"
    return None


class Authenticator:
    """The configured keys and the token signer of one serving process."""

    def __init__(self, settings: Settings) -> None:
        self.keys: list[ApiKey] = []
        self.weaknesses: list[str] = []
        legacy = settings.api_key.get_secret_value()
        if legacy:
            self._add(legacy, Role.ADMIN, "RACEWIRE_API_KEY")
        else:
            self.weaknesses.append("RACEWIRE_API_KEY: it is empty")
        for i, entry in enumerate(e.strip() for e in settings.api_keys.get_secret_value().split(",")):
            if entry:
                self._parse_entry(entry, f"RACEWIRE_API_KEYS entry {i + 1}")
        secret = settings.token_secret.get_secret_value()
        why = weak_secret(secret, MIN_TOKEN_SECRET_LENGTH)
        if why is not None:
            self.weaknesses.append(f"RACEWIRE_TOKEN_SECRET: {why}")
        # empty: a random secret of this process (tokens then work only against this process)
        self.ephemeral_secret = not secret
        self._secret = secret or secrets.token_urlsafe(48)
        self.ttl_s = settings.token_ttl_s

    def _parse_entry(self, entry: str, source: str) -> None:
        body, sep, role_text = entry.rpartition(":")
        if not sep or not body:
            raise ValueError(f"{source}: expected KEY:ROLE or sha256:HEX:ROLE")
        role = Role.parse(role_text)
        if body.startswith("sha256:"):
            hexed = body.removeprefix("sha256:")
            try:
                digest = bytes.fromhex(hexed)
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ValueError(f"{source}: sha256: needs the key's SHA-256 as 64 hex digits")
            self.keys.append(ApiKey(digest, role, source))
        else:
            self._add(body, role, source)

    def _add(self, key: str, role: Role, source: str) -> None:
        why = weak_secret(key, MIN_KEY_LENGTH)
        if why is not None:
            self.weaknesses.append(f"{source}: {why}")
        self.keys.append(ApiKey(_digest(key), role, source))

    # ------------------------------------------------------------------ checking

    def key(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``; every configured key is compared (constant time each)."""
        digest = _digest(presented)
        found = None
        for k in self.keys:
            if hmac.compare_digest(digest, k.digest):
                found = k
        return found

    def from_headers(self, api_key: str | None, authorization: str | None) -> Principal:
        """The caller proven by the request's credentials; :data:`ANONYMOUS` without any."""
        if api_key:
            k = self.key(api_key)
            if k is None:
                raise AuthError("invalid API key (X-API-Key); check the key, or ask an admin for one")
            return Principal(f"key:{k.fingerprint}", k.role, "api-key")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer":
                return self.verify(token.strip())
        return ANONYMOUS

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "role", "key"]})
        except jwt.ExpiredSignatureError:
            raise AuthError(f"the bearer token has expired; get a new one from POST {TOKEN_PATH}") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid bearer token ({exc}); get one from POST {TOKEN_PATH}") from None
        try:
            role = Role.parse(str(claims["role"]))
        except ValueError:
            raise AuthError("invalid bearer token (unknown role)") from None
        issuer_key = next((k for k in self.keys if k.fingerprint == claims["key"]), None)
        if issuer_key is None or issuer_key.role < role:
            raise AuthError("the key this bearer token was issued for is no longer valid; get a new token") from None
        return Principal(str(claims["sub"]), role, "token")

    def issue(self, key: ApiKey, role: Role, client_id: str | None) -> dict[str, Any]:
        """An OAuth2 token response for ``key`` with ``role`` (at most the key's)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": client_id or f"key:{key.fingerprint}",
                  "role": role.label, "key": key.fingerprint, "iat": now, "exp": now + self.ttl_s,
                  "jti": uuid.uuid4().hex}
        return {"access_token": jwt.encode(claims, self._secret, algorithm=ALGORITHM), "token_type": "bearer",
                "expires_in": self.ttl_s, "scope": role.label}


# ------------------------------------------------------------------ route dependencies

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="an API key (RACEWIRE_API_KEY / RACEWIRE_API_KEYS)")
_bearer = HTTPBearer(auto_error=False, description=f"a bearer token from POST {TOKEN_PATH}")
_oauth2 = OAuth2(flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(
    tokenUrl=TOKEN_PATH, scopes={"operator": "ingest, simulations, strategy work", "admin": "everything"})),
    auto_error=False, description="client credentials: an API key as client_secret")


def get_authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def principal_of(request: Request) -> Principal:
    """The caller, as :mod:`serving.edge` authenticated it (or from the headers, when it did not)."""
    found = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(found, Principal):
        return found
    try:
        principal = get_authenticator(request).from_headers(request.headers.get("x-api-key"),
                                                            request.headers.get("authorization"))
    except AuthError as exc:
        raise HTTPException(exc.status_code, detail=exc.detail,
                            headers={"WWW-Authenticate": WWW_AUTHENTICATE}) from None
    request.scope[PRINCIPAL_SCOPE_KEY] = principal
    return principal


def refusal(principal: Principal, needed: Role) -> AuthError | None:
    """Why ``principal`` may not use a route that needs ``needed`` (401 or 403), or None."""
    if principal.role >= needed:
        return None
    if principal.role is Role.PUBLIC:
        return AuthError(f"this endpoint needs the {needed.label} role: send an API key in the X-API-Key header "
                         f"or a bearer token from POST {TOKEN_PATH} (Authorization: Bearer ...)")
    return AuthError(f"this endpoint needs the {needed.label} role; these credentials have the "
                     f"{principal.role.label} role", status.HTTP_403_FORBIDDEN)


def require(role: Role) -> Callable[..., Principal]:
    """Route dependency: the caller must have ``role``. In OpenAPI the route then lists the security
    schemes, with the role as its OAuth2 scope: :func:`roles_by_operation` reads the role back from
    there (so the edge middleware refuses before reading a body), which keeps one definition."""

    key, bearer, oauth = Security(_api_key_header), Security(_bearer), Security(_oauth2, scopes=[role.label])

    def dependency(request: Request, _key: Any = key, _bearer_token: Any = bearer, _oauth: Any = oauth) -> Principal:
        principal = principal_of(request)
        error = refusal(principal, role)
        if error is not None:
            raise HTTPException(error.status_code, detail=error.detail,
                                headers={"WWW-Authenticate": WWW_AUTHENTICATE})
        return principal

    dependency.__name__ = f"require_{role.label}"
    return dependency


Operator = Depends(require(Role.OPERATOR))
Admin = Depends(require(Role.ADMIN))
OperatorDep = Annotated[Principal, Operator]
AdminDep = Annotated[Principal, Admin]
PrincipalDep = Annotated[Principal, Depends(principal_of)]


def roles_by_operation(openapi: dict[str, Any]) -> list[tuple[str, re.Pattern[str], Role]]:
    """``(method, path regex, role)`` of every operation that needs a role, from the app's OpenAPI
    document (the OAuth2 scopes :func:`require` declares).

    >>> doc = {"paths": {"/api/races/{race_id}/x": {"post": {"security": [{"APIKeyHeader": []},
    ...                                                                    {"OAuth2": ["operator"]}]}}}}
    >>> [(m, p.pattern, r.label) for m, p, r in roles_by_operation(doc)]
    [('POST', '^/api/races/[^/]+/x$', 'operator')]
    """
    out = []
    for path, operations in (openapi.get("paths") or {}).items():
        regex = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
        for method, op in operations.items():
            scopes = [s for req in op.get("security") or () for s in req.get("OAuth2", ())]
            roles = [Role.parse(s) for s in scopes if s in ("operator", "admin")]
            if roles:
                out.append((method.upper(), regex, max(roles)))
    return out
