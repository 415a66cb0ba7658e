"""The edge of the app: credentials before bodies, body size limits, security headers.

:class:`EdgeMiddleware` is pure ASGI (it never buffers a response, so SSE streams pass straight
through). For every HTTP request it

1. authenticates the caller from the headers (``X-API-Key`` or a bearer token; none: anonymous),
   answering 401 at once for credentials that are present but wrong;
2. for a request that may carry a body (any method but GET, HEAD, OPTIONS), finds the role its
   operation asks for (:func:`serving.auth.roles_by_operation`, from the app's OpenAPI document) and
   answers 401/403 *before reading any of the body*;
3. limits the body: a ``Content-Length`` over the limit is a 413 at once; a chunked body is counted
   as it streams in and the read that passes the limit fails with a 413 (nothing beyond it is kept).
   Anonymous callers get ``RACEWIRE_MAX_PUBLIC_BODY_BYTES``, operators and admins
   ``RACEWIRE_MAX_BODY_BYTES``;
4. adds security headers to the response: a Content-Security-Policy that fits the page (the page and
   Swagger UI load everything from this server; Swagger UI's one inline script is allowed by its
   hash; the GraphiQL page's own CDN assets are allowed on that page only), ``nosniff``,
   ``X-Frame-Options: DENY``, ``Referrer-Policy``, and HSTS only when the request came over https
   (directly or through a trusted proxy).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import (
    PRINCIPAL_SCOPE_KEY,
    WWW_AUTHENTICATE,
    Authenticator,
    AuthError,
    Role,
    refusal,
    roles_by_operation,
)

log = logging.getLogger("racewire.serving.edge")

NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HSTS = b"max-age=31536000; includeSubDomains"
_BASE_CSP = ("default-src 'self'; script-src 'self'{script}; style-src 'self'{style}; img-src 'self' data:{cdn}; "
             "font-src 'self'{cdn}; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
             "frame-ancestors 'none'")
#: the page and the API: everything from this server, nothing inline
PAGE_CSP = _BASE_CSP.format(script="", style="", cdn="")
#: strawberry's GraphiQL page: its assets come from a CDN (with SRI) and it starts with inline code
GRAPHIQL_CSP = _BASE_CSP.format(script=" 'unsafe-inline' https://unpkg.com", style=" 'unsafe-inline' https://unpkg.com",
                                cdn=" https://unpkg.com")


class BodyTooLarge(HTTPException):
    """Raised by the request's ``receive`` past the limit. An HTTPException, so that FastAPI's body
    reading passes it on (it turns other errors into a 400) and its handler answers the 413."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def docs_csp(inline_script_hashes: Iterable[str]) -> str:
    """The policy for Swagger UI: local assets, its inline start-up script allowed by hash."""
    extra = "".join(f" 'sha256-{h}'" for h in inline_script_hashes)
    return _BASE_CSP.format(script=extra, style=" 'unsafe-inline'", cdn="")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> tuple[Message, Message]:
    body = orjson.dumps({"detail": detail})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return ({"type": "http.response.start", "status": status, "headers": raw},
            {"type": "http.response.body", "body": body})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, auth: Authenticator, openapi: Callable[[], dict[str, Any]], max_body_bytes: int,
                 max_public_body_bytes: int, docs_policy: str | None = None) -> None:
        self.app = app
        self.auth = auth
        self.openapi = openapi
        self.max_body = max_body_bytes
        self.max_public_body = max_public_body_bytes
        self.page_csp = PAGE_CSP.encode()
        self.docs_csp = (docs_policy or PAGE_CSP).encode()
        self.graphiql_csp = GRAPHIQL_CSP.encode()
        self._roles: list[tuple[str, re.Pattern[str], Role]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        security = self._security_headers(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *security]
            await send(message)

        try:
            principal = self.auth.from_headers(_header(scope, b"x-api-key"), _header(scope, b"authorization"))
        except AuthError as exc:
            await self._refuse(scope, send_with_headers, exc.status_code, exc.detail, authenticate=True)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        if scope["method"] not in NO_BODY_METHODS:
            error = refusal(principal, self._role_of(scope))
            if error is not None:
                await self._refuse(scope, send_with_headers, error.status_code, error.detail, authenticate=True)
                return
        if principal.role is Role.PUBLIC:
            limit, setting = self.max_public_body, "RACEWIRE_MAX_PUBLIC_BODY_BYTES"
        else:
            limit, setting = self.max_body, "RACEWIRE_MAX_BODY_BYTES"
        too_large = (f"the request body is over {limit} bytes ({setting})" +
                     ("; operators and admins may send more" if principal.role is Role.PUBLIC else
                      "; send the records in smaller batches"))
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(scope, send_with_headers, 413, too_large)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large)
            return message

        started = False

        async def send_tracking(message: Message) -> None:  # one wrapper per message (SSE sends many)
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *security]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_tracking)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._refuse(scope, send_with_headers, 413, exc.detail)

    def _role_of(self, scope: Scope) -> Role:
        if self._roles is None:  # the app's routes are all there by the first request
            self._roles = roles_by_operation(self.openapi())
        path, method = scope["path"], scope["method"]
        return max((role for m, regex, role in self._roles if m == method and regex.match(path)), default=Role.PUBLIC)

    def _security_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope["path"]
        if path == "/docs" or path.startswith("/docs/"):
            csp = self.docs_csp
        elif path == "/graphql" and scope["method"] == "GET":
            csp = self.graphiql_csp
        else:
            csp = self.page_csp
        headers = [(b"content-security-policy", csp), (b"x-content-type-options", b"nosniff"),
                   (b"x-frame-options", b"DENY"), (b"referrer-policy", b"strict-origin-when-cross-origin"),
                   (b"cross-origin-opener-policy", b"same-origin")]
        if scope.get("scheme") == "https":
            headers.append((b"strict-transport-security", HSTS))
        return headers

    async def _refuse(self, scope: Scope, send: Send, status: int, detail: str, authenticate: bool = False) -> None:
        log.info("refused %s %s: %s", scope["method"], scope["path"], detail,
                 extra={"status": status, "method": scope["method"], "path": scope["path"]})
        start, body = _json(status, detail, {"WWW-Authenticate": WWW_AUTHENTICATE} if authenticate else None)
        await send(start)
        await send(body)
