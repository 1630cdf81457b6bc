"""Which messages of a re-opened upstream stream belong to that stream: pure functions over JSON
text (the pump applies them to every event a resumed upstream connection sends).

2025-03-26 transports §Resumability: a server may replay after Last-Event-ID on the same stream
only. Some upstreams replay more (server-everything's event store replays every later event of
the *session*, and its own empty resume markers), so the gateway sifts what comes back: a
response only for a request still pending on the stream, a progress notification only for a
progress token of one of the stream's requests, and only JSON-RPC messages. Other notifications
and server requests cannot be attributed by their content and pass.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Reasons a replayed message is dropped (the `reason` label of mcpgw_upstream_replay_dropped_total).
NOT_JSONRPC = "not_jsonrpc"  # unparseable, or not a JSON-RPC 2.0 message (e.g. an empty `{}` marker)
FOREIGN_RESPONSE = "foreign_response"  # answers a request that is not pending on this stream
FOREIGN_PROGRESS = "foreign_progress"  # progress for a token of no request on this stream
REASONS = (NOT_JSONRPC, FOREIGN_RESPONSE, FOREIGN_PROGRESS)

PROGRESS = "notifications/progress"


@dataclass(frozen=True, slots=True)
class Sifted:
    """What to relay of one event's data (None: nothing) and why each dropped message went."""

    data: str | None
    dropped: tuple[str, ...] = ()


def _key(value: Any) -> str | int | None:
    """A JSON-RPC id or progress token as compared here: a string or an integer, never a bool."""
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def progress_token(message: Mapping[str, Any]) -> str | int | None:
    """The progress token a request asks for (basic/utilities/progress: `params._meta.progressToken`)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, Mapping) else None
    return _key(meta.get("progressToken")) if isinstance(meta, Mapping) else None


def progress_tokens(requests: Iterable[Mapping[str, Any]]) -> tuple[str | int, ...]:
    """The progress tokens of a stream's requests, in order."""
    return tuple(t for t in (progress_token(m) for m in requests) if t is not None)


def _reason(item: object, pending: Collection[Any], tokens: Collection[Any] | None) -> str | None:
    """Why one message does not belong to the stream, or None when it does."""
    if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
        return NOT_JSONRPC
    method = item.get("method")
    if isinstance(method, str):
        if method == PROGRESS and tokens is not None:
            params = item.get("params")
            token = _key(params.get("progressToken")) if isinstance(params, dict) else None
            return None if token is not None and token in tokens else FOREIGN_PROGRESS
        return None  # another notification or a server request: not attributable by content
    if "method" in item:
        return NOT_JSONRPC
    if "result" in item or "error" in item:
        request_id = _key(item.get("id"))
        return None if request_id is not None and request_id in pending else FOREIGN_RESPONSE
    return NOT_JSONRPC


def sift(data: str, *, pending: Collection[Any], tokens: Collection[Any] | None) -> Sifted:
    """Keep of `data` (one SSE event's payload: a message or a batch) what belongs to the stream.

    `pending`: the request ids still unanswered on the stream (a standalone GET stream has none:
    it never carries a response, transports §Listening for Messages); `tokens`: the progress tokens
    of the stream's requests, or None when they were not recorded (then progress passes)."""
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError):
        return Sifted(None, (NOT_JSONRPC,))
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items:
        return Sifted(None, (NOT_JSONRPC,))
    kept: list[Any] = []
    dropped: list[str] = []
    for item in items:
        reason = _reason(item, pending, tokens)
        if reason is None:
            kept.append(item)
        else:
            dropped.append(reason)
    if not dropped:
        return Sifted(data)
    if not kept:
        return Sifted(None, tuple(dropped))
    return Sifted(json.dumps(kept if isinstance(decoded, list) else kept[0], separators=(",", ":")), tuple(dropped))
