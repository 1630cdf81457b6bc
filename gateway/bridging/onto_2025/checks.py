"""What a 2026-07-28 server must refuse, which the bridge (the 2026 server its clients see) refuses
itself before any upstream work: a 2025 upstream would accept these, or refuse them its own way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import errors
from gateway.bridging.onto_2025 import translate
from gateway.wire import protocol

# 2026-07-28 changelog: RPCs removed in this version (a 2025 session would still serve them).
REMOVED_METHODS = frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})


class MalformedMeta(errors.InvalidParams):
    """basic/index "_meta": a request without its required fields is malformed: -32602, HTTP 400."""

    status = 400


class MethodNotServed(errors.MethodNotFound):
    """basic/transports §Protocol Version Header: a method the server does not implement: -32601, HTTP 404."""

    status = 404


def check_request(method: str, params: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    if method in REMOVED_METHODS:
        raise MethodNotServed(f"Method not found: {method} (removed in 2026-07-28)")
    meta = translate.meta_of(params)
    version = meta.get(translate.META_VERSION)
    if not isinstance(version, str) or not isinstance(meta.get(translate.META_CAPABILITIES), dict):
        raise MalformedMeta("Invalid params: _meta lacks io.modelcontextprotocol/protocolVersion or clientCapabilities")
    header = headers.get(protocol.H_VERSION)
    if header is None or protocol.field_value(header) != version:
        # basic/transports §Protocol Version Header: the header must match the body's _meta.
        raise errors.HeaderMismatch("MCP-Protocol-Version header does not match _meta protocolVersion")


def method_not_found(message: Mapping[str, Any]) -> bool:
    error = message.get("error")
    return isinstance(error, dict) and error.get("code") == errors.METHOD_NOT_FOUND
