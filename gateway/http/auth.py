"""Optional OAuth 2.1 resource-server authentication (MCP basic/authorization).

Off unless `--auth-issuer` is set. Then every MCP request needs `Authorization: Bearer <JWT>`
signed by the issuer (keys from its JWKS, fetched and cached, or a static public key), with
this gateway as audience and a valid expiry. A missing or bad token gets 401 with
`WWW-Authenticate` pointing at `/.well-known/oauth-protected-resource` (RFC 9728), which the
gateway serves. The client's token is never passed upstream (security best practices: no
token passthrough); per-pool upstream credentials come from `--upstream-header`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt

from gateway import errors
from gateway.http.jwks import JwksCache

METADATA_PATH = "/.well-known/oauth-protected-resource"


class Unauthorized(errors.ClientError):
    status = 401


class Authenticator:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        resource: str,
        jwks: JwksCache | None,
        public_key: str | None,
        algorithms: tuple[str, ...],
    ) -> None:
        if jwks is None and not public_key:
            raise errors.ConfigError("auth: --auth-issuer needs --auth-jwks-url or --auth-public-key")
        self.issuer = issuer
        self.audience = audience  # configured, never a request's Host (Settings refuses to start without)
        self.metadata_url = metadata_url(resource)
        self._jwks = jwks
        self._public_key = _read_key(public_key) if public_key else None
        self._algorithms = list(algorithms)

    @staticmethod
    def challenge(resource_metadata: str, error: str | None = None) -> dict[str, str]:
        """authorization §Protected Resource Metadata Discovery: WWW-Authenticate on 401."""
        value = f'Bearer resource_metadata="{resource_metadata}"'
        if error:
            value += f', error="{error}"'
        return {"WWW-Authenticate": value}

    async def principal(self, headers: Mapping[str, str]) -> str:
        """The authenticated principal (`issuer|subject`) of a request, or Unauthorized."""
        return principal_of(await self.claims(headers))

    async def claims(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """The verified claims of a request's bearer token, or Unauthorized."""
        metadata_url = self.metadata_url
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
                audience=self.audience,
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
        assert self._jwks is not None
        return await self._jwks.key(jwt.get_unverified_header(token).get("kid"))


def principal_of(claims: Mapping[str, Any]) -> str:
    return f"{claims['iss']}|{claims['sub']}"


def _read_key(value: str) -> str:
    if value.startswith("@"):
        with open(value[1:]) as handle:
            return handle.read()
    return value


def metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known path goes between the resource's host and its path."""
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{path}"


def resource_metadata(resource: str, authorization_servers: list[str]) -> dict[str, Any]:
    """RFC 9728 protected resource metadata for this gateway."""
    return {
        "resource": resource,
        "authorization_servers": authorization_servers,
        "bearer_methods_supported": ["header"],
    }
