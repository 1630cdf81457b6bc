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


def mcp_of(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `mcp` variable of one JSON-RPC request."""
    params = params or {}
    mcp: dict[str, Any] = {
        "method": method,
        "tool": {"name": ""},
        "prompt": {"name": ""},
        "resource": {"uri": ""},
        "arguments": {},
    }
    target = TARGETS.get(method)
    if target is not None:
        value = params.get(target[1])
        mcp[target[0]] = {target[1]: value if isinstance(value, str) else ""}
    if method == "tools/call":
        arguments = params.get("arguments")
        mcp["arguments"] = arguments if isinstance(arguments, dict) else {}
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
        "client": {"ip": client_ip},
        "pool": pool,
        "mcp": mcp_of(method, params),
        "request": {"headers": dict(headers)},
    }


def as_call(base: Mapping[str, Any], method: str, target: str) -> dict[str, Any]:
    """`base` (a list request's variables) as if the client called one listed item: what a list
    shows is what the principal may call."""
    _, field = TARGETS[method]
    mcp = mcp_of(method, {field: target})
    return {**base, "mcp": mcp}
