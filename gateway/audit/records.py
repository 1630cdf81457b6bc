"""One audit record, built from what the request's decision and its answer say. Never a token;
a tool call's arguments only as a hash unless the operator asks for them."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.policy.variables import target_name


@dataclass(frozen=True)
class Answered:
    """What the handler knows once the answer is on its way."""

    status: int
    body: bytes | None  # a whole JSON answer; None for a stream
    era: str
    seconds: float


def outcome_of(answered: Answered) -> str:
    """ok / error: a JSON-RPC error answer (whatever its HTTP status) is an error."""
    if answered.status >= 400:
        return "error"
    if answered.body is not None and b'"error"' in answered.body:
        try:
            message = json.loads(answered.body)
        except (ValueError, RecursionError):
            return "error"
        if isinstance(message, dict) and "error" in message:
            return "error"
    return "ok"


def args_digest(arguments: Mapping[str, Any]) -> str:
    if not arguments:
        return ""
    try:
        canonical = msgspec.json.encode(arguments, order="sorted")
    except (TypeError, ValueError):  # not JSON's types (never from a parsed body): their text form
        canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(canonical).hexdigest()


def trace_id(traceparent: str | None) -> str:
    """W3C Trace Context: `version-traceid-parentid-flags`."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else ""


def encode(record: Mapping[str, Any]) -> bytes:
    """One record's JSON (msgspec: a fifth of the standard library's cost per record)."""
    try:
        return msgspec.json.encode(record)
    except (TypeError, ValueError):
        return json.dumps(record, default=str).encode()


def record(
    *,
    replica: str,
    principal: str,
    session: str,
    variables: Mapping[str, Any],
    request_id: Any,
    decision: str,
    rule: str,
    answered: Answered,
    traceparent: str | None,
    with_arguments: bool,
    now: float | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "audit",
        "ts": round(time.time() if now is None else now, 3),
        "replica": replica,
        "principal": principal,
        "session": session,
        "pool": variables["pool"],
        "era": answered.era,
        "method": variables["mcp.method"],
        "name": target_name(variables),
        "request_id": request_id,
        "decision": decision,
        "rule": rule,
        "outcome": outcome_of(answered),
        "status": answered.status,
        "duration_ms": round(answered.seconds * 1000, 3),
        "trace_id": trace_id(traceparent),
        "args_sha256": args_digest(variables["mcp.arguments"]),
    }
    if with_arguments:
        out["arguments"] = variables["mcp.arguments"]
    return out
