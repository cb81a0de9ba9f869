"""Plain ASGI middleware: security headers, bearer-token auth, a same-origin check, and the body size limit.

Each one decides from the request line and headers alone, so a refused request is answered before any of
its body is read.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

# The review page loads one script and one stylesheet from this server: no inline script, no eval, no
# third-party origin. /docs (Swagger UI) styles some elements inline, so it alone may use inline styles.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]  # fmt: skip
PROTECTED = ("/api/", "/healthz")  # every API call; the page, its static files and /docs are public
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "0.0.0.0", "192.168.1.5")]
    [True, True, True, True, False, False]
    """
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _refuse(scope, receive, send, status: int, message: str, headers: dict | None = None) -> None:
    await JSONResponse({"error": message}, status_code=status, headers=headers)(scope, receive, send)


class SecurityHeaders:
    """CSP and friends on every response, errors included."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = (DOCS_CSP if scope["path"].startswith("/docs") else CSP).encode()

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", csp), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Guard:
    """Bearer-token auth on the API (when a token is set) and a same-origin check on unsafe methods.

    The origin check stops another web site open in the analyst's browser from posting annotations to a
    server on localhost (a multipart form is a "simple" cross-origin request that CORS does not stop).
    """

    def __init__(self, app, *, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.token and path.startswith(PROTECTED):
            given = _header(scope, b"authorization") or ""
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token):
                return await _refuse(scope, receive, send, 401, "missing or wrong token (send Authorization: "
                                     "Bearer <token>)", {"WWW-Authenticate": "Bearer"})  # fmt: skip
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = _header(scope, b"origin")
            if origin is not None and urlsplit(origin).netloc != (_header(scope, b"host") or ""):
                return await _refuse(scope, receive, send, 403, f"cross-origin request from {origin} refused")
        return await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over ``max_body`` bytes: at once from Content-Length, else as soon as the streamed
    body passes the limit (nothing beyond it is read)."""

    def __init__(self, app, *, max_body: int):
        self.app = app
        self.max_body = max_body

    def _message(self) -> str:
        return f"request body over the {self.max_body:,}-byte limit (--max-bytes plus room for the form)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await _refuse(scope, receive, send, 400, "Content-Length is not a number")
            if int(length) > self.max_body:
                return await _refuse(scope, receive, send, 413, self._message())
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)
