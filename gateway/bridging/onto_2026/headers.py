"""The routing headers of a 2026-07-28 request, built from its body (pure; no IO).

2026-07-28 basic/transports §Standard Request Headers and §Custom Headers from Tool Parameters:
`Mcp-Method`, `Mcp-Name` and one `Mcp-Param-{Name}` per `x-mcp-header` annotation of the tool's
input schema, each value encoded per §Value Encoding.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from typing import Any

from gateway.bridging.onto_2026.translate import MODERN, NAME_FIELDS

log = logging.getLogger(__name__)

X_MCP_HEADER = "x-mcp-header"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2 token
_SAFE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_MAX_SAFE_INTEGER = 2**53 - 1

# A tool's header map: property path (chain of `properties` keys) -> the annotation's name.
HeaderMap = dict[tuple[str, ...], str]


def encode_value(value: str) -> str:
    """§Value Encoding: plain when visible ASCII without edge spaces, else the Base64 sentinel form
    (also for a plain value that looks like the sentinel itself)."""
    if value and _SAFE.fullmatch(value) and not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    return "=?base64?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def header_map(schema: Any) -> HeaderMap | None:
    """The `x-mcp-header` annotations of an input schema; None when one is invalid (§Schema
    Extension: the client then must not use the tool). Only `properties` chains are walked: an
    annotation elsewhere is not reachable and so never mirrored."""
    found: HeaderMap = {}
    seen: set[str] = set()

    def walk(node: Any, path: tuple[str, ...]) -> bool:
        properties = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(properties, dict):
            return True
        for key, child in properties.items():
            if not isinstance(child, dict):
                continue
            name = child.get(X_MCP_HEADER)
            if name is not None:
                if not isinstance(name, str) or not _TOKEN.fullmatch(name) or name.lower() in seen:
                    return False
                if child.get("type") not in ("string", "integer", "boolean"):
                    return False
                seen.add(name.lower())
                found[(*path, str(key))] = name
            if not walk(child, (*path, str(key))):
                return False
        return True

    return found if walk(schema, ()) else None


def _value_at(arguments: Any, path: tuple[str, ...]) -> Any:
    node = arguments
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _as_text(value: Any) -> str | None:
    """§Value Encoding type conversion; None for a value no header may carry."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) <= _MAX_SAFE_INTEGER else None
    if isinstance(value, str):
        return value
    return None


def routing_headers(message: Mapping[str, Any], params_map: HeaderMap | None) -> dict[str, str]:
    """`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and the tool's `Mcp-Param-*` for one request."""
    method = str(message.get("method"))
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    name_field = NAME_FIELDS.get(method)
    if name_field is not None and isinstance(params.get(name_field), str):
        headers["Mcp-Name"] = encode_value(params[name_field])
    if method == "tools/call" and params_map:
        arguments = params.get("arguments")
        for path, name in params_map.items():
            text = _as_text(_value_at(arguments, path))
            if text is not None:  # §Schema Extension: no value at the path -> no header
                headers[f"Mcp-Param-{name}"] = encode_value(text)
    return headers


def without_invalid_tools(answer: dict[str, Any]) -> dict[str, Any]:
    """A tools/list answer without the tools whose `x-mcp-header` annotations are invalid (§Schema
    Extension: a client MUST exclude them; the gateway is the upstream's client here)."""
    result = answer.get("result")
    tools = result.get("tools") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(tools, list):
        return answer
    kept = [t for t in tools if not isinstance(t, dict) or header_map(t.get("inputSchema")) is not None]
    if len(kept) == len(tools):
        return answer
    log.warning("tools/list: %d tool(s) with invalid x-mcp-header annotations left out", len(tools) - len(kept))
    return {**answer, "result": {**result, "tools": kept}}
