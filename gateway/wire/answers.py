"""What the JSON-RPC answers inside an SSE payload say, and an error answer for a request whose
real one is lost: pure functions over JSON text (the pump, the relay and the legacy bridge use
them)."""

from __future__ import annotations

import json
from typing import Any

from gateway import errors
from gateway.wire import sse


def error_message(request_id: Any, message: str) -> str:
    """A JSON-RPC error answering a request whose real answer can no longer be obtained."""
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": errors.SERVER_ERROR, "message": message}})


def answered_ids(data: str) -> list[Any]:
    """Ids of the JSON-RPC responses inside one SSE data payload (single or batch)."""
    if '"result"' not in data and '"error"' not in data and "\\" not in data:
        return []  # a response has one of these keys, spelt out unless escaped: no parse needed
    return parsed_answered_ids(data)


def parsed_answered_ids(data: str) -> list[Any]:
    """`answered_ids` by parsing the payload, always."""
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError):
        return []
    items = decoded if isinstance(decoded, list) else [decoded]
    return [
        m["id"]
        for m in items
        if isinstance(m, dict)
        and "method" not in m
        and ("result" in m or "error" in m)
        and isinstance(m.get("id"), str | int)
        and not isinstance(m.get("id"), bool)
    ]


def initialize_answer(payload: bytes, is_sse: bool, request_id: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The InitializeResult message in an upstream answer, and the data events to relay."""
    if is_sse:
        parser = sse.Parser()
        datas = [e.data for e in parser.feed(payload + b"\n\n") if e.data]
    else:
        datas = [payload.decode("utf-8", "replace")]
    for data in datas:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if isinstance(message, dict) and message.get("id") == request_id:
            return message, datas
    return None, datas


def answer_in(payload: bytes, is_sse: bool, request_id: Any) -> dict[str, Any] | None:
    """The JSON-RPC response to `request_id` in a whole upstream answer (JSON or SSE); a malformed
    SSE answer is an UpstreamError."""
    texts = [payload.decode("utf-8", "replace")]
    if is_sse:
        try:
            texts = [e.data for e in sse.Parser().feed(payload + b"\n\n") if e.data]
        except sse.SSEError as exc:
            raise errors.UpstreamError(f"Bad upstream answer: {exc}") from exc
    for text in texts:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("id") == request_id:
            return message
    return None
