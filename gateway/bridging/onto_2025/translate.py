"""Sans-IO translation between a 2026-07-28 client's messages and a 2025-era upstream session's.

A 2026 request carries its protocol version, client info and capabilities in `_meta`
(2026-07-28 basic/index "_meta"); the upstream session was initialized with the same
capabilities, so those keys are taken off before the request goes upstream. The request's id is
replaced by one unique to the gateway: several clients share an upstream session, and their ids
may collide. Results gain the fields 2026-07-28 requires (`resultType`, and the caching hints
of cacheable results).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from gateway.wire import sse

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
# 2026-07-28 basic/index "_meta": per-request protocol fields, meaningless to a 2025 session.
PROTOCOL_META = frozenset({META_VERSION, META_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL})
MODERN = "2026-07-28"
# schema 2026-07-28 CacheableResult: these results require ttlMs and cacheScope.
CACHEABLE = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"})
# 2025 capabilities with no 2026 counterpart in the same place (tasks are an extension in 2026).
DROPPED_CAPABILITIES = frozenset({"tasks"})
DEFAULT_CLIENT_INFO: Mapping[str, Any] = {"name": "mcp-gateway-bridge", "version": "1"}
# Client capabilities not declared upstream: a 2025 server asks for roots on the session's GET
# stream, unrelated to any call (server-everything's `listRoots()`), which no 2026 client reads:
# declared, its roots-using tools would wait forever; undeclared, they are not offered.
UNDECLARED_CAPABILITIES = frozenset({"roots"})


def meta_of(params: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = params.get("_meta")
    return meta if isinstance(meta, dict) else {}


def declared(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The client capabilities a 2026 request declares in its `_meta` (those a 2025 session can be
    given) and its client info."""
    meta = meta_of(params)
    capabilities = meta.get(META_CAPABILITIES)
    info = meta.get(META_CLIENT_INFO)
    return (
        {k: v for k, v in capabilities.items() if k not in UNDECLARED_CAPABILITIES}
        if isinstance(capabilities, dict)
        else {},
        dict(info) if isinstance(info, dict) else dict(DEFAULT_CLIENT_INFO),
    )


def wants_logs(params: Mapping[str, Any]) -> bool:
    """2026-07-28 changelog: no `notifications/message` for a request without a log level."""
    return META_LOG_LEVEL in meta_of(params)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def upstream_request(message: Mapping[str, Any], upstream_id: str) -> dict[str, Any]:
    """The request as the 2025 session gets it: the gateway's id, no per-request protocol `_meta`."""
    out = {k: v for k, v in message.items() if k != "id"}
    out["id"] = upstream_id
    params = message.get("params")
    if isinstance(params, dict):
        params = dict(params)
        meta = {k: v for k, v in meta_of(params).items() if k not in PROTOCOL_META}
        if meta:
            params["_meta"] = meta
        else:
            params.pop("_meta", None)
        out["params"] = params
    return out


def initialize_request(
    request_id: str, capabilities: Mapping[str, Any], info: Mapping[str, Any], version: str
) -> bytes:
    params = {"protocolVersion": version, "capabilities": dict(capabilities), "clientInfo": dict(info)}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}).encode()


def complete(method: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """A 2025 result in 2026-07-28 shape (schema: Result.resultType; CacheableResult)."""
    out = dict(result)
    out.setdefault("resultType", "complete")
    if method in CACHEABLE:
        # The result came from one principal's session: never shared, not kept (caching §Cache Scope).
        out.setdefault("ttlMs", 0)
        out.setdefault("cacheScope", "private")
    return out


def client_response(message: Mapping[str, Any], method: str, client_id: Any) -> dict[str, Any]:
    """The upstream's response to the bridged request, under the client's own id."""
    out = dict(message)
    out["id"] = client_id
    result = out.get("result")
    if isinstance(result, dict):
        out["result"] = complete(method, result)
    return out


def discover_result(initialized: Mapping[str, Any]) -> dict[str, Any]:
    """server/discover §DiscoverResult, from a 2025 InitializeResult."""
    capabilities = initialized.get("capabilities")
    result: dict[str, Any] = {
        "resultType": "complete",
        "supportedVersions": [MODERN],
        "capabilities": {
            k: copy.deepcopy(v)
            for k, v in (capabilities.items() if isinstance(capabilities, dict) else ())
            if k not in DROPPED_CAPABILITIES
        },
        "ttlMs": 0,
        "cacheScope": "private",
    }
    info = initialized.get("serverInfo")
    if isinstance(info, dict):
        result["_meta"] = {META_SERVER_INFO: info}
    if isinstance(initialized.get("instructions"), str):
        result["instructions"] = initialized["instructions"]
    return result


def answer_in(payload: bytes, is_sse: bool, request_id: Any) -> dict[str, Any] | None:
    """The JSON-RPC response to `request_id` in a whole upstream answer (JSON or SSE)."""
    texts = [payload.decode("utf-8", "replace")]
    if is_sse:
        try:
            texts = [e.data for e in sse.Parser().feed(payload + b"\n\n") if e.data]
        except sse.SSEError:
            return None
    for text in texts:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
            return message
    return None
