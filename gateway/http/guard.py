"""The front door of every MCP request: header size, Origin, authentication, rate limit.

It decides who the client is: the authenticated principal (`issuer|subject`) when auth is on,
otherwise the client IP (for limits only; anonymous sessions are bound to no principal).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import errors
from gateway.errors import HeadersTooLarge  # (also raised by the server: http/framing.py)
from gateway.http.auth import Authenticator, principal_of, resource_metadata
from gateway.store.limits import Limiter
from gateway.wire import protocol


@dataclass
class Guard:
    origins: tuple[str, ...]
    limiter: Limiter
    authenticator: Authenticator | None
    resource: str | None  # the configured audience / resource URL (never from a request's Host)
    authorization_servers: list[str]
    max_header_bytes: int
    trust_forwarded_for: bool

    def client_ip(self, request: Request) -> str:
        forwarded = request.headers.get("x-forwarded-for") if self.trust_forwarded_for else None
        if forwarded:
            return forwarded.split(",")[0].strip()
        client = request.scope.get("client")  # not `request.client`: a new named tuple on every read
        return str(client[0]) if client else "unknown"

    async def admit(self, request: Request) -> None:
        """Raise the right client error, or set `request.state.principal` and `.client_key`."""
        size = sum(map(len, chain.from_iterable(request.scope["headers"])))  # the raw ASGI list, no copy
        if size > self.max_header_bytes:
            raise HeadersTooLarge(f"Request Header Fields Too Large: over {self.max_header_bytes} bytes")
        # transports §Security Warning: validate Origin (DNS rebinding); 2025-11-25: invalid -> 403
        if not protocol.origin_allowed(request.headers.get("origin"), self.origins):
            raise errors.Forbidden("Forbidden: Origin not allowed")
        principal = ""
        if self.authenticator is not None:
            claims = await self.authenticator.claims(request.headers)
            principal = principal_of(claims)
            request.state.claims = claims  # what policy rules see as `jwt`
        request.state.principal = principal
        request.state.client_key = principal or f"ip:{self.client_ip(request)}"
        await self.limiter.check_rate(request.state.client_key)

    def metadata(self, request: Request) -> Response:
        """RFC 9728 protected resource metadata (404 when auth is off)."""
        if self.authenticator is None or self.resource is None:
            return JSONResponse({"error": "authentication is not enabled"}, status_code=404)
        return JSONResponse(resource_metadata(self.resource, self.authorization_servers))
