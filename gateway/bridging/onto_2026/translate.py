"""The 2025 <-> 2026-07-28 message shapes, as pure functions over JSON values (no IO).

A 2025 client's `initialize` is answered from the upstream's `server/discover`; each later request
goes upstream with the per-request `_meta` a 2026-07-28 request carries (the client's info and
capabilities, kept from its `initialize`); each answer comes back without the 2026-only fields.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gateway.wire.protocol import SESSIONFUL_VERSIONS

MODERN = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"

# 2026-07-28 fields a 2025 result does not have: the result's kind (complete / input_required /
# task) and the caching hints (SEP-2549).
MODERN_RESULT_FIELDS = ("resultType", "ttlMs", "cacheScope")
# Server capabilities a 2025 client understands (2025-11-25 schema ServerCapabilities); change
# notifications and resource subscriptions cross through the standalone stream (`listen.py`).
CAPABILITIES_2025 = ("experimental", "logging", "completions", "prompts", "resources", "tools")
# basic/patterns/mrtr §Supported Requests: the requests an input-required result may answer.
INPUT_REQUIRED = "input_required"
# 2026-07-28 transports §Standard Request Headers: the body field Mcp-Name mirrors, per method.
NAME_FIELDS: Mapping[str, str] = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def negotiate(offered: str | None) -> str:
    """lifecycle §Version Negotiation: the client's version when the gateway speaks it, else the latest."""
    return offered if offered in SESSIONFUL_VERSIONS else SESSIONFUL_VERSIONS[-1]


def initialize_result(discovered: Mapping[str, Any], version: str) -> dict[str, Any]:
    """An InitializeResult for a 2025 client from the upstream's `server/discover` result."""
    meta = discovered.get("_meta")
    info = meta.get(META_SERVER_INFO) if isinstance(meta, dict) else None
    server_info = dict(info) if isinstance(info, dict) else {"name": "mcp-gateway", "version": ""}
    server_info.setdefault("version", "")
    capabilities: dict[str, Any] = {}
    offered = discovered.get("capabilities")
    for name in CAPABILITIES_2025:
        value = offered.get(name) if isinstance(offered, dict) else None
        if isinstance(value, dict):
            capabilities[name] = dict(value)
    result: dict[str, Any] = {"protocolVersion": version, "capabilities": capabilities, "serverInfo": server_info}
    if isinstance(discovered.get("instructions"), str):
        result["instructions"] = discovered["instructions"]
    return result


def upstream_message(
    message: Mapping[str, Any], init_params: Mapping[str, Any], upstream_id: Any, log_level: str | None = None
) -> dict[str, Any]:
    """The 2026-07-28 request for a 2025 client's request: same method and params, the upstream id,
    and the per-request `_meta` (basic/index §_meta: protocol version, client info, capabilities
    declared at the client's `initialize`, and the level of its `logging/setLevel`, without which
    a 2026-07-28 server sends no log notifications). The client's own `_meta` keys stay."""
    params = message.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = dict(params["_meta"]) if isinstance(params.get("_meta"), dict) else {}
    meta[META_VERSION] = MODERN
    info = init_params.get("clientInfo")
    if isinstance(info, dict):
        meta[META_CLIENT_INFO] = info
    capabilities = init_params.get("capabilities")
    meta[META_CLIENT_CAPABILITIES] = capabilities if isinstance(capabilities, dict) else {}
    if log_level is not None:
        meta[META_LOG_LEVEL] = log_level
    params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": upstream_id, "method": message.get("method"), "params": params}


def retry_message(
    sent: Mapping[str, Any], upstream_id: Any, responses: Mapping[str, Any], state: Any
) -> dict[str, Any]:
    """mrtr §Basic Workflow: the original request again, under a new id, with the client's answers
    (`inputResponses`) and the server's `requestState` echoed exactly (absent when it sent none)."""
    params = dict(sent.get("params") or {})
    params.pop("inputResponses", None)
    params.pop("requestState", None)
    if responses:
        params["inputResponses"] = dict(responses)
    if state is not None:
        params["requestState"] = state
    return {**sent, "id": upstream_id, "params": params}


def is_input_required(message: Mapping[str, Any]) -> bool:
    result = message.get("result")
    return isinstance(result, dict) and result.get("resultType") == INPUT_REQUIRED


def to_2025(message: Mapping[str, Any], client_id: Any) -> dict[str, Any]:
    """An upstream answer as a 2025 client expects it: its own id, no 2026-only result fields."""
    answer = {**message, "id": client_id}
    result = answer.get("result")
    if isinstance(result, dict):
        result = {k: v for k, v in result.items() if k not in MODERN_RESULT_FIELDS}
        meta = result.get("_meta")
        if isinstance(meta, dict) and META_SERVER_INFO in meta:
            meta = {k: v for k, v in meta.items() if k != META_SERVER_INFO}
            if meta:
                result["_meta"] = meta
            else:
                del result["_meta"]
        answer["result"] = result
    return answer


def input_requests(message: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The server-to-client requests of an input-required result, by the server's keys."""
    result = message.get("result")
    asked = result.get("inputRequests") if isinstance(result, dict) else None
    if not isinstance(asked, dict):
        return {}
    return {
        str(key): copy.deepcopy(value)
        for key, value in asked.items()
        if isinstance(value, dict) and isinstance(value.get("method"), str)
    }


def request_state(message: Mapping[str, Any]) -> Any:
    result = message.get("result")
    return result.get("requestState") if isinstance(result, dict) else None
