"""Optional OAuth 2.1 resource-server authentication (MCP basic/authorization).

Off unless `--auth-issuer` is set. Then every MCP request needs `Authorization: Bearer <JWT>`
signed by the issuer (keys from its JWKS, fetched and cached, or a static public key), with
this gateway as audience and a valid expiry. A missing or bad token gets 401 with
`WWW-Authenticate` pointing at `/.well-known/oauth-protected-resource` (RFC 9728), which the
gateway serves. The client's token is never passed upstream (security best practices: no
token passthrough); per-pool upstream credentials come from `--upstream-header`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt

from gateway import errors

METADATA_PATH = "/.well-known/oauth-protected-resource"
JWKS_TTL = 300.0


class Unauthorized(errors.ClientError):
    status = 401


class Authenticator:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None,
        jwks_url: str | None,
        public_key: str | None,
        algorithms: tuple[str, ...],
        http: aiohttp.ClientSession,
    ) -> None:
        if not jwks_url and not public_key:
            raise errors.ConfigError("auth: --auth-issuer needs --auth-jwks-url or --auth-public-key")
        self.issuer = issuer
        self.audience = audience
        self._jwks_url = jwks_url
        self._public_key = _read_key(public_key) if public_key else None
        self._algorithms = list(algorithms)
        self._http = http
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0
        self._jwks_lock = asyncio.Lock()

    @staticmethod
    def challenge(resource_metadata: str, error: str | None = None) -> dict[str, str]:
        """authorization §Protected Resource Metadata Discovery: WWW-Authenticate on 401."""
        value = f'Bearer resource_metadata="{resource_metadata}"'
        if error:
            value += f', error="{error}"'
        return {"WWW-Authenticate": value}

    async def principal(self, headers: Mapping[str, str], audience: str, metadata_url: str) -> str:
        """The authenticated principal (`issuer|subject`) of a request, or Unauthorized."""
        return principal_of(await self.claims(headers, audience, metadata_url))

    async def claims(self, headers: Mapping[str, str], audience: str, metadata_url: str) -> dict[str, Any]:
        """The verified claims of a request's bearer token, or Unauthorized."""
        header = headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._unauthorized("Unauthorized: a bearer token is required", metadata_url, None)
        try:
            key = await self._key_for(token.strip())
            claims: dict[str, Any] = jwt.decode(
                token.strip(),
                key=key,
                algorithms=self._algorithms,
                audience=self.audience or audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise self._unauthorized(f"Unauthorized: invalid token ({exc})", metadata_url, "invalid_token") from None
        return claims

    def _unauthorized(self, message: str, metadata_url: str, error: str | None) -> Unauthorized:
        exc = Unauthorized(message)
        exc.headers = self.challenge(metadata_url, error)
        return exc

    async def _key_for(self, token: str) -> Any:
        if self._public_key is not None:
            return self._public_key
        kid = jwt.get_unverified_header(token).get("kid")
        jwks = await self._get_jwks(refresh=False)
        for candidate in jwks.keys:
            if kid is None or candidate.key_id == kid:
                return candidate.key
        jwks = await self._get_jwks(refresh=True)  # key rotation: one refetch on an unknown kid
        for candidate in jwks.keys:
            if candidate.key_id == kid:
                return candidate.key
        raise KeyError(f"no JWKS key with kid {kid!r}")

    async def _get_jwks(self, *, refresh: bool) -> jwt.PyJWKSet:
        async with self._jwks_lock:
            fresh = self._jwks is not None and time.monotonic() - self._jwks_at < JWKS_TTL
            if self._jwks is not None and fresh and not refresh:
                return self._jwks
            assert self._jwks_url is not None
            try:
                async with asyncio.timeout(5), self._http.get(self._jwks_url) as response:
                    document = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                if self._jwks is not None:
                    return self._jwks  # keep serving with the cached keys
                raise errors.UpstreamUnavailable(f"cannot fetch the issuer's JWKS: {exc}") from exc
            self._jwks = jwt.PyJWKSet.from_dict(document)
            self._jwks_at = time.monotonic()
            return self._jwks


def principal_of(claims: Mapping[str, Any]) -> str:
    return f"{claims['iss']}|{claims['sub']}"


def _read_key(value: str) -> str:
    if value.startswith("@"):
        with open(value[1:]) as handle:
            return handle.read()
    return value


def resource_metadata(resource: str, authorization_servers: list[str]) -> dict[str, Any]:
    """RFC 9728 protected resource metadata for this gateway."""
    return {
        "resource": resource,
        "authorization_servers": authorization_servers,
        "bearer_methods_supported": ["header"],
    }
