"""gateway/bridging/onto_2026/translate.py: the 2025 <-> 2026-07-28 shapes, on plain values."""

from __future__ import annotations

from typing import Any

from gateway.bridging.onto_2026 import translate

DISCOVERED = {
    "resultType": "complete",
    "supportedVersions": ["2026-07-28"],
    "capabilities": {
        "tools": {"listChanged": True},
        "resources": {"subscribe": True, "listChanged": True},
        "extensions": {"io.modelcontextprotocol/tasks": {}},
    },
    "instructions": "be kind",
    "ttlMs": 0,
    "cacheScope": "private",
    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "up", "version": "1.2"}},
}


def test_version_negotiation_keeps_a_2025_version_and_offers_the_latest_otherwise() -> None:
    assert translate.negotiate("2025-03-26") == "2025-03-26"
    assert translate.negotiate("2025-06-18") == "2025-06-18"
    assert translate.negotiate("2024-11-05") == "2025-11-25"
    assert translate.negotiate(None) == "2025-11-25"


def test_initialize_result_from_discover() -> None:
    result = translate.initialize_result(DISCOVERED, "2025-06-18")
    assert result == {
        "protocolVersion": "2025-06-18",
        "serverInfo": {"name": "up", "version": "1.2"},
        # 2026-only capabilities (extensions) do not cross
        "capabilities": {"tools": {"listChanged": True}, "resources": {"subscribe": True, "listChanged": True}},
        "instructions": "be kind",
    }


def test_initialize_result_without_server_info_names_the_gateway() -> None:
    result = translate.initialize_result({"capabilities": {}}, "2025-11-25")
    assert result["serverInfo"] == {"name": "mcp-gateway", "version": ""}


def test_upstream_message_carries_the_initialize_declarations_in_meta() -> None:
    init = {"clientInfo": {"name": "c", "version": "9"}, "capabilities": {"elicitation": {}}}
    message: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "x", "_meta": {"progressToken": 3}},
    }
    sent = translate.upstream_message(message, init, 7)
    assert sent["params"]["_meta"] == {
        "progressToken": 3,
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "9"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    }
    assert message["params"]["_meta"] == {"progressToken": 3}  # the client's message is not changed


def test_answers_lose_the_2026_only_fields_and_take_the_client_id() -> None:
    answer = {
        "jsonrpc": "2.0",
        "id": "up",
        "result": {
            "resultType": "complete",
            "ttlMs": 5,
            "cacheScope": "public",
            "tools": [],
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "x"}},
        },
    }
    assert translate.to_2025(answer, 4) == {"jsonrpc": "2.0", "id": 4, "result": {"tools": []}}
    kept = {"jsonrpc": "2.0", "id": 1, "result": {"_meta": {"a": 1, "io.modelcontextprotocol/serverInfo": {}}}}
    assert translate.to_2025(kept, 1)["result"] == {"_meta": {"a": 1}}
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "no"}}
    assert translate.to_2025(error, 2) == {**error, "id": 2}


def test_input_required_round_trip() -> None:
    answer = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "resultType": "input_required",
            "inputRequests": {"k": {"method": "elicitation/create", "params": {"message": "?"}}, "bad": 3},
            "requestState": "sealed",
        },
    }
    assert translate.is_input_required(answer)
    assert translate.input_requests(answer) == {"k": {"method": "elicitation/create", "params": {"message": "?"}}}
    sent = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "requestState": "old"}}
    retry = translate.retry_message(sent, "1~1", {"k": {"action": "accept"}}, translate.request_state(answer))
    assert retry["id"] == "1~1"
    assert retry["params"] == {"name": "t", "inputResponses": {"k": {"action": "accept"}}, "requestState": "sealed"}
    # mrtr §Client Requirements: no requestState in the retry when the server sent none
    assert "requestState" not in translate.retry_message(sent, 2, {}, None)["params"]
