"""Pure MCP Streamable HTTP rules: versions, JSON-RPC classification, header tables, ids.

No IO here (sans-IO, like h11): every function takes plain values and returns plain values
or raises a `gateway.errors` client error, so the rules are tested without sockets.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway import errors
from gateway.wire import codec

# --- protocol versions -------------------------------------------------------------------

SESSIONFUL_VERSIONS: tuple[str, ...] = ("2025-03-26", "2025-06-18", "2025-11-25")
STATELESS_VERSIONS: tuple[str, ...] = ("2026-07-28",)
# 2025-06-18 transports §Protocol Version Header: no header means 2025-03-26.
DEFAULT_VERSION = "2025-03-26"
BATCH_VERSIONS = frozenset({"2025-03-26"})  # batching was removed in 2025-06-18
PRIMING_VERSIONS = frozenset({"2025-11-25"})  # 2025-11-25 transports §Resumability: priming event
# Versions a client may offer in `initialize` (2024-11-05 clients use the old HTTP+SSE transport,
# but an upstream may still negotiate it over Streamable HTTP).
INITIALIZE_VERSIONS = frozenset({"2024-11-05", *SESSIONFUL_VERSIONS})

H_SESSION = "mcp-session-id"
H_VERSION = "mcp-protocol-version"
H_LAST_EVENT_ID = "last-event-id"
H_METHOD = "mcp-method"
H_NAME = "mcp-name"

JSON = "application/json"
SSE = "text/event-stream"

# RFC 9110 §7.6.1 hop-by-hop headers, plus headers the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Never copied client -> upstream: the gateway rewrites session and cursor, and owns framing.
DROP_TO_UPSTREAM = HOP_BY_HOP | {
    "host",
    "content-length",
    "accept-encoding",
    "origin",  # checked by the gateway; the gateway is the upstream's client
    H_SESSION,
    H_LAST_EVENT_ID,
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}
# CORS answers are the gateway's to give (or not): an upstream's `access-control-allow-origin: *`
# would let any web page read answers through the gateway (Fetch standard §3.2.3, CORS protocol).
CORS_RESPONSE = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
        "access-control-allow-private-network",
    }
)
# What an upstream says about itself or its own origin: its software (the gateway's clients need
# not know what runs behind it) and alternative services of its host (RFC 7838 §3: `Alt-Svc` names
# the origin that sent it, which is not the gateway's).
UPSTREAM_SELF = frozenset({"server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "via", "alt-svc"})
# Never copied upstream -> client: the upstream's session id must not leak (gateway issues its own).
DROP_TO_CLIENT = HOP_BY_HOP | CORS_RESPONSE | UPSTREAM_SELF | {"content-length", "content-encoding", H_SESSION, "date"}


def is_stateless(version: str) -> bool:
    return version in STATELESS_VERSIONS


def header_version(value: str | None) -> str:
    """The era a request belongs to, from its `MCP-Protocol-Version` header."""
    if value is None or value == "":
        return DEFAULT_VERSION  # 2025-06-18 transports §Protocol Version Header
    if value not in SESSIONFUL_VERSIONS and value not in STATELESS_VERSIONS:
        # 2025-06-18 transports §Protocol Version Header: invalid or unsupported -> 400
        raise errors.UnsupportedVersion(
            f"Unsupported MCP-Protocol-Version: {value!r}",
            data={"supported": [*SESSIONFUL_VERSIONS, *STATELESS_VERSIONS], "requested": value},
        )
    return value


# --- JSON-RPC classification -------------------------------------------------------------


class Message:
    """One JSON-RPC message, classified. Its method and id are read once (a request reads them
    a dozen times on its way through the gateway)."""

    __slots__ = ("id", "method", "raw")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        method = raw.get("method")
        self.method: str | None = method if isinstance(method, str) else None
        value = raw.get("id")
        self.id: errors.JsonRpcId = value if isinstance(value, str | int) and not isinstance(value, bool) else None

    def __eq__(self, other: object) -> bool:  # (and so unhashable, as the frozen dataclass over a dict was)
        return isinstance(other, Message) and other.raw == self.raw

    def __repr__(self) -> str:
        return f"Message({self.raw!r})"

    @property
    def is_request(self) -> bool:
        return self.method is not None and "id" in self.raw

    @property
    def is_notification(self) -> bool:
        return self.method is not None and "id" not in self.raw

    @property
    def is_response(self) -> bool:
        return self.method is None and ("result" in self.raw or "error" in self.raw)


class Body:
    """A parsed POST body: one message or (2025-03-26 only) a batch."""

    __slots__ = ("first_id", "is_batch", "messages", "request_ids", "requests", "strict")

    def __init__(self, messages: tuple[Message, ...], is_batch: bool, *, strict: bool = False) -> None:
        self.messages = messages
        self.is_batch = is_batch
        self.strict = strict  # parsed by msgspec: strict JSON (`wire/codec.py`)
        # Read several times per request, and a Body never changes: worked out once, here (a
        # functools.cached_property takes a lock on every first read on CPython 3.11).
        self.requests: tuple[Message, ...] = tuple(m for m in messages if m.is_request)
        self.request_ids: tuple[str | int, ...] = tuple(m.id for m in self.requests if m.id is not None)
        self.first_id: errors.JsonRpcId = self.requests[0].id if self.requests else None

    def __eq__(self, other: object) -> bool:  # (and so unhashable: its messages are)
        return isinstance(other, Body) and (other.messages, other.is_batch) == (self.messages, self.is_batch)

    def __repr__(self) -> str:
        return f"Body(messages={self.messages!r}, is_batch={self.is_batch!r})"

    @property
    def initialize(self) -> Message | None:
        return next((m for m in self.requests if m.method == "initialize"), None)


def _check_message(item: object) -> Message:
    if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
        raise errors.InvalidRequest("Invalid Request: not a JSON-RPC 2.0 object")
    message = Message(item)
    if "method" in item and message.method is None:
        raise errors.InvalidRequest("Invalid Request: method must be a string")
    if message.is_request and (message.id is None):
        # MCP basic/index §Requests: the id MUST be a string or integer, never null.
        raise errors.InvalidRequest("Invalid Request: id must be a string or an integer")
    if not (message.is_request or message.is_notification or message.is_response):
        raise errors.InvalidRequest("Invalid Request: neither request, notification nor response")
    return message


def parse_body(raw: bytes, version: str, *, max_batch: int = 100) -> Body:
    """Parse and classify a POST body; raise ParseError / InvalidRequest on bad input."""
    try:
        decoded, strict = codec.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.ParseError(f"Parse error: {exc}") from None
    except RecursionError:
        raise errors.ParseError("Parse error: JSON nested too deeply") from None
    if isinstance(decoded, list):
        # 2025-06-18 changelog: JSON-RPC batching removed; 2025-03-26 transports §Sending Messages.
        if version not in BATCH_VERSIONS:
            raise errors.InvalidRequest(f"Invalid Request: batches are not allowed in {version}")
        if not decoded:
            raise errors.InvalidRequest("Invalid Request: empty batch")
        if len(decoded) > max_batch:
            raise errors.PayloadTooLarge(f"Payload Too Large: more than {max_batch} messages in a batch")
        return Body(tuple(_check_message(item) for item in decoded), is_batch=True, strict=strict)
    return Body((_check_message(decoded),), is_batch=False, strict=strict)


def peek(raw: bytes) -> tuple[errors.JsonRpcId, str | None]:
    """Best-effort (id, method) of a single-message body, for errors raised before parsing.

    2026-07-28 basic/transports: an HTTP error answer carries the JSON-RPC id of the request.
    """
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(decoded, dict):
        return None, None
    message = Message(decoded)
    return message.id, message.method


def versions_for(*, has_session: bool, method: str | None) -> list[str]:
    """The versions under which the gateway could serve a request (UnsupportedProtocolVersion data).

    Without a session id, anything but `initialize` can only be served statelessly (2026-07-28).
    """
    if has_session or method == "initialize":
        return [*SESSIONFUL_VERSIONS, *STATELESS_VERSIONS]
    return list(STATELESS_VERSIONS)


def initialize_version(body: Body) -> str | None:
    """The protocol version a client asks for in `initialize` (lifecycle §Version Negotiation)."""
    init = body.initialize
    if init is None:
        return None
    params = init.raw.get("params")
    version = params.get("protocolVersion") if isinstance(params, dict) else None
    return version if isinstance(version, str) else None


def negotiated_version(result: Mapping[str, Any], offered: str | None) -> str:
    """The version from an InitializeResult, falling back to what the client offered."""
    answer = result.get("result")
    version = answer.get("protocolVersion") if isinstance(answer, dict) else None
    if isinstance(version, str):
        return version
    return offered or DEFAULT_VERSION


# --- media types -------------------------------------------------------------------------


def _media_types(header: str | None) -> set[str]:
    return {part.split(";")[0].strip().lower() for part in (header or "").split(",") if part.strip()}


def check_post_headers(content_type: str | None, accept: str | None) -> None:
    """transports §Sending Messages: JSON body; Accept lists JSON and SSE."""
    refusal = _post_refusal(content_type, accept)
    if refusal is not None:
        raise refusal[0](refusal[1])


@functools.lru_cache(maxsize=256)  # a client sends the same two values on every call: parse them once
def _post_refusal(content_type: str | None, accept: str | None) -> tuple[type[errors.ClientError], str] | None:
    if JSON not in _media_types(content_type):
        return errors.UnsupportedMediaType, "Unsupported Media Type: Content-Type must be application/json"
    accepted = _media_types(accept)
    wildcard = bool(accepted & {"*/*"})
    has_json = wildcard or bool(accepted & {JSON, "application/*"})
    has_sse = wildcard or bool(accepted & {SSE, "text/*"})
    if not (has_json and has_sse):
        return errors.NotAcceptable, "Not Acceptable: Accept must list application/json and text/event-stream"
    return None


def check_get_accept(accept: str | None) -> None:
    """transports §Listening for Messages: GET must accept text/event-stream."""
    accepted = _media_types(accept)
    if not accepted & {SSE, "text/*", "*/*"}:
        raise errors.NotAcceptable("Not Acceptable: Accept must list text/event-stream")


# --- Origin (DNS rebinding) ----------------------------------------------------------------

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """transports §Security Warning: validate Origin; local origins are allowed by default."""
    if origin is None:
        return True  # non-browser clients send none
    allowed_set = set(allowed)
    if "*" in allowed_set or origin in allowed_set:
        return True
    host = origin_host(origin)
    return host is not None and host in LOCAL_HOSTS


def origin_host(origin: str) -> str | None:
    """The host of a serialized origin (RFC 6454 §6.2: scheme "://" host [":" port], nothing more),
    or None when `origin` is not one: `http://localhost:80.evil.com` has no valid port, and
    `http://localhost@evil.com` names evil.com; both are refused, not read as localhost."""
    try:
        parts = urlsplit(origin)
        port = parts.port  # ValueError for a port that is not a number in 0-65535
    except ValueError:  # e.g. "http://[::1": malformed
        return None
    if parts.scheme not in ("http", "https") or parts.username is not None or parts.password is not None:
        return None
    if parts.path or parts.query or parts.fragment or "?" in origin or "#" in origin:
        return None
    netloc = parts.netloc.lower()
    host = parts.hostname
    if host is None or netloc != (f"[{host}]" if ":" in host else host) + ("" if port is None else f":{port}"):
        return None  # anything else in the authority (empty port, spaces, stray characters)
    return host


# --- session ids ---------------------------------------------------------------------------

SESSION_ID_BYTES = 24  # 192 bits from `secrets`; the spec asks for cryptographically secure ids
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")


def new_session_id() -> str:
    """transports §Session Management: globally unique, secure, visible ASCII (0x21-0x7E)."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def valid_session_id(value: str) -> bool:
    return _SESSION_ID_RE.fullmatch(value) is not None


def field_value(value: str) -> str:
    """RFC 9110 §5.5: leading/trailing whitespace (OWS) is not part of a field value."""
    return value.strip(" \t")


def forward_headers(
    headers: Iterable[tuple[str, str]], drop: frozenset[str], *, lower_names: bool = False
) -> dict[str, str]:
    """Copy headers except those in `drop` and those named by `Connection` (RFC 9110 §7.6.1),
    under their names as given or, with `lower_names`, lower-cased.

    A name that comes more than once keeps all its values, in order, as one line (RFC 9110
    §5.3: a comma-separated list; `Cookie` with "; ", RFC 6265 §5.4). `Set-Cookie` cannot be
    combined (RFC 9110 §5.3): the caller takes it out first (`asgi.responses.client_headers`).
    One pass, each name lower-cased once (`drop` holds `connection`: it is never copied)."""
    kept: dict[str, str] = {}
    named: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
        elif lower not in drop:
            key = lower if lower_names else name
            earlier = kept.get(key)
            if earlier is None:
                kept[key] = field_value(value)
            else:
                kept[key] = earlier + ("; " if lower == "cookie" else ", ") + field_value(value)
    if named:
        return {name: value for name, value in kept.items() if name.lower() not in named}
    return kept
