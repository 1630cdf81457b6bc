"""The gateway's one exception tree.

Every error a client can see knows its HTTP status and JSON-RPC error code, so the app turns
any of them into a spec-shaped answer in one place. Foreign exceptions (redis, aiohttp) are
translated into this tree at the module that talks to them.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, TypeVar

# JSON-RPC 2.0 error codes (jsonrpc.org/specification §5.1) and MCP's own.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # implementation-defined server errors: -32000..-32099
HEADER_MISMATCH = -32020  # MCP 2026-07-28 basic/transports "HeaderMismatch"
MISSING_REQUIRED_CAPABILITY = -32021  # MCP 2026-07-28 "MissingRequiredClientCapability"
UNSUPPORTED_PROTOCOL_VERSION = -32022  # MCP 2026-07-28 "UnsupportedProtocolVersionError"

JsonRpcId = str | int | None


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status: int = 500
    code: int = INTERNAL_ERROR
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_jsonrpc(self, request_id: JsonRpcId = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": request_id, "error": error}


class ConfigError(GatewayError):
    """Invalid configuration, reported at start-up."""


# --- client errors (4xx) ---------------------------------------------------------------


class ClientError(GatewayError):
    status = 400
    code = INVALID_REQUEST


class ParseError(ClientError):
    code = PARSE_ERROR


class InvalidRequest(ClientError):
    code = INVALID_REQUEST


class HeaderMismatch(ClientError):
    code = HEADER_MISMATCH


class BadLastEventId(ClientError):
    """A `Last-Event-ID` that is not one the gateway could have issued."""


class MissingSession(ClientError):
    """A non-initialize request without `Mcp-Session-Id` (transports §Session Management)."""


class UnsupportedVersion(ClientError):
    """Unknown `MCP-Protocol-Version` (2025-06-18 transports §Protocol Version Header: 400;
    2026-07-28 basic/versioning: code -32022 with data.supported and data.requested)."""

    code = UNSUPPORTED_PROTOCOL_VERSION


class SessionNotFound(ClientError):
    """Unknown, expired, foreign or malformed session id: the client must re-initialize."""

    status = 404
    code = SERVER_ERROR


class StreamNotFound(SessionNotFound):
    """A resume cursor naming a stream this session does not own."""


class RequestError(ClientError):
    """A well-formed request the JSON-RPC layer refuses (unknown method, bad params): HTTP 200,
    because the transport worked; the JSON-RPC error body carries the verdict."""

    status = 200


class MethodNotFound(RequestError):
    code = METHOD_NOT_FOUND


class InvalidParams(RequestError):
    code = INVALID_PARAMS


class MissingCapability(RequestError):
    """The request needs a client capability (e.g. an extension) it did not declare."""

    code = MISSING_REQUIRED_CAPABILITY


class Forbidden(ClientError):
    status = 403


class NotAcceptable(ClientError):
    status = 406


class UnsupportedMediaType(ClientError):
    status = 415


class PayloadTooLarge(ClientError):
    status = 413


class HeadersTooLarge(ClientError):
    status = 431


class MethodNotAllowed(ClientError):
    status = 405


class RequestIdReused(ClientError):
    """A request id this session already used, with another body, or whose answer is not kept
    (MCP basic §Requests: an id MUST NOT be reused within a session)."""

    status = 409


class RequestInFlight(ClientError):
    """A repeat of a request that is still running and cannot be attached to (Idempotency-Key)."""

    status = 409
    headers = {"Retry-After": "1"}


class IdempotencyKeyReused(ClientError):
    """draft-ietf-httpapi-idempotency-key-header §2.7: same key, different request -> 422."""

    status = 422


# --- upstream and store errors (5xx) ---------------------------------------------------


class UpstreamError(GatewayError):
    """The upstream answered with something the gateway cannot relay."""

    status = 502
    code = SERVER_ERROR


class UpstreamUnavailable(UpstreamError):
    """No healthy instance, or the instance refused the connection."""

    status = 503
    headers = {"Retry-After": "1"}


class UpstreamBusy(UpstreamError):
    """Every connection to the instance stayed busy for --upstream-acquire-timeout: nothing was
    sent (so a retry is safe), and the instance is not unhealthy (no failover, no circuit)."""

    status = 503
    headers = {"Retry-After": "1"}


class UpstreamTimeout(UpstreamError):
    status = 504


class StoreError(GatewayError):
    """Redis (or the embedded store) failed; the request cannot be served safely."""

    status = 503
    code = SERVER_ERROR
    headers = {"Retry-After": "1"}


class StoreBusy(StoreError):
    """Every pooled Redis connection stayed busy for the pool timeout: the command was never sent,
    so trying it again is safe (even an append); it says overload, not an outage."""


class StreamLost(GatewayError):
    """A stream's events can no longer be delivered (gap, vanished metadata, failed resume)."""

    status = 200
    code = SERVER_ERROR


E = TypeVar("E", bound=GatewayError)

_log = logging.getLogger("gateway.errors")


def correlation_id() -> str:
    return secrets.token_hex(6)


def opaque(cls: type[E], public: str, detail: object) -> E:
    """An error whose details (addresses, library messages) go to the log only: the client gets
    `public` and a correlation id, the same one the log line carries (issue 35: "Error 111
    connecting to 127.0.0.1:6379" reached clients)."""
    cid = correlation_id()
    _log.warning("%s [correlation id %s]: %s", public, cid, detail)
    return cls(f"{public} (correlation id {cid})", data={"correlationId": cid})
