"""List answers filtered to what the principal may call: `tools/list` shows the tools a
`tools/call` of this principal would be allowed, and so on. Applied to the upstream's answer on
its way to the client (so the upstream's pagination cursor stays right), never to what is cached."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

from gateway.policy.engine import CompiledPolicy
from gateway.policy.variables import as_call

# list method -> (result field, item field, the call it stands for)
LISTS: Mapping[str, tuple[str, str, str]] = {
    "tools/list": ("tools", "name", "tools/call"),
    "prompts/list": ("prompts", "name", "prompts/get"),
    "resources/list": ("resources", "uri", "resources/read"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate", "resources/read"),
}


def filter_result(
    policy: CompiledPolicy | None, base: Mapping[str, Any], method: str, result: Any, memo: Hashable = None
) -> Any:
    """`result` with the items the principal may not call removed (the same object when none are)."""
    shape = LISTS.get(method)
    if policy is None or shape is None or not isinstance(result, dict) or not isinstance(result.get(shape[0]), list):
        return result
    field, item_field, call = shape
    kept = [
        item for item in result[field] if isinstance(item, dict) and _may(policy, base, call, item[item_field], memo)
    ]
    if len(kept) == len(result[field]):
        return result
    return {**result, field: kept}


def _may(policy: CompiledPolicy, base: Mapping[str, Any], call: str, target: object, memo: Hashable) -> bool:
    """Whether this principal may call one listed item."""
    found = as_call(base, call, str(target or ""))
    if memo is None:
        return policy.decide(found, with_limits=False).result == "allow"
    return policy.decide_as((memo, call, str(target or "")), found, with_limits=False).result == "allow"


def filter_message(
    policy: CompiledPolicy | None, base: Mapping[str, Any], method: str, message: Any, memo: Hashable = None
) -> Any:
    """A JSON-RPC response message with its list result filtered."""
    if isinstance(message, dict) and "result" in message:
        filtered = filter_result(policy, base, method, message["result"], memo)
        if filtered is not message["result"]:
            return {**message, "result": filtered}
    return message


def filter_payload(
    policy: CompiledPolicy | None, base: Mapping[str, Any], method: str, payload: bytes, memo: Hashable = None
) -> bytes:
    """A JSON body (one response) filtered; anything else is passed as it is."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return payload
    filtered = filter_message(policy, base, method, message, memo)
    return payload if filtered is message else json.dumps(filtered).encode()
