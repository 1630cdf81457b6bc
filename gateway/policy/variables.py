"""The variables a rule sees, built from one request: every one always defined.

A name or URI the request does not carry is `""` and absent arguments are `{}`, so
`mcp.tool.name == "x"` is simply false for `tools/list` and no rule fails on a missing key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Credentials never reach a rule: the verified claims are in `jwt`, and a rule over the raw token
# would tie the policy to one token.
HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

# Which parameter names the target of each method (2025-11-25 server/tools, prompts, resources).
TARGETS: Mapping[str, tuple[str, str]] = {
    "tools/call": ("tool", "name"),
    "prompts/get": ("prompt", "name"),
    "resources/read": ("resource", "uri"),
    "resources/subscribe": ("resource", "uri"),
    "resources/unsubscribe": ("resource", "uri"),
}


def request_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header names (HTTP's are case-insensitive); repeated ones joined with `,`."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in HIDDEN_HEADERS:
            continue
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


# Every variable is its own CEL variable, qualified names included (`mcp.tool.name` is one string,
# not a field of a map): the CEL library converts only the variables a rule reads, and a leaf
# string costs a fraction of a nested map (docs/decisions/0011-cel-library.md). Type: "string" or "map".
DECLARED: Mapping[str, str] = {
    "jwt": "map",
    "client.ip": "string",
    "pool": "string",
    "mcp.method": "string",
    "mcp.tool.name": "string",
    "mcp.prompt.name": "string",
    "mcp.resource.uri": "string",
    "mcp.arguments": "map",
    "request.headers": "map",
}
NAMES = {"tool": "mcp.tool.name", "prompt": "mcp.prompt.name", "resource": "mcp.resource.uri"}


def mcp_of(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `mcp.*` variables of one JSON-RPC request."""
    params = params or {}
    mcp: dict[str, Any] = {
        "mcp.method": method,
        "mcp.tool.name": "",
        "mcp.prompt.name": "",
        "mcp.resource.uri": "",
        "mcp.arguments": {},
    }
    target = TARGETS.get(method)
    if target is not None:
        value = params.get(target[1])
        mcp[NAMES[target[0]]] = value if isinstance(value, str) else ""
    if method == "tools/call":
        arguments = params.get("arguments")
        mcp["mcp.arguments"] = arguments if isinstance(arguments, dict) else {}
    return mcp


def variables(
    *,
    claims: Mapping[str, Any],
    client_ip: str,
    pool: str,
    method: str,
    params: Mapping[str, Any] | None,
    headers: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "jwt": claims,
        "client.ip": client_ip,
        "pool": pool,
        **mcp_of(method, params),
        "request.headers": headers,
    }


def target_name(found: Mapping[str, Any]) -> str:
    """The tool, prompt or resource a request names ("" for none)."""
    return str(found["mcp.tool.name"] or found["mcp.prompt.name"] or found["mcp.resource.uri"])


def as_call(base: Mapping[str, Any], method: str, target: str) -> dict[str, Any]:
    """`base` (a list request's variables) as if the client called one listed item: what a list
    shows is what the principal may call."""
    _, field = TARGETS[method]
    return {**base, **mcp_of(method, {field: target})}
