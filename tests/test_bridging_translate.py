"""The 2026 <-> 2025 message translation of the era bridge (pure)."""

from __future__ import annotations

import json

from gateway.bridging.onto_2025 import translate

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "9"},
    "progressToken": 7,
}


def test_upstream_request_takes_the_gateway_id_and_drops_protocol_meta() -> None:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "_meta": META}}
    out = translate.upstream_request(message, "mcpgw-x")
    assert out["id"] == "mcpgw-x"
    assert out["params"] == {"name": "echo", "_meta": {"progressToken": 7}}
    assert message["id"] == 1 and "io.modelcontextprotocol/clientInfo" in META  # the input is not changed
    bare = translate.upstream_request({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {}}}, "g")
    assert bare["params"] == {}


def test_declared_capabilities_and_client_info() -> None:
    assert translate.declared({"_meta": META}) == ({"elicitation": {}}, {"name": "c", "version": "9"})
    with_roots = {**META, "io.modelcontextprotocol/clientCapabilities": {"roots": {}, "sampling": {}}}
    assert translate.declared({"_meta": with_roots})[0] == {"sampling": {}}  # roots: never declared upstream
    capabilities, info = translate.declared({})
    assert capabilities == {} and info == dict(translate.DEFAULT_CLIENT_INFO)
    assert not translate.wants_logs({"_meta": META})
    assert translate.wants_logs({"_meta": {"io.modelcontextprotocol/logLevel": "info"}})


def test_results_gain_the_2026_fields() -> None:
    listed = translate.client_response({"jsonrpc": "2.0", "id": "g", "result": {"tools": []}}, "tools/list", 5)
    assert listed == {
        "jsonrpc": "2.0",
        "id": 5,
        "result": {"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"},
    }
    called = translate.client_response({"jsonrpc": "2.0", "id": "g", "result": {"content": []}}, "tools/call", 5)
    assert called["result"] == {"content": [], "resultType": "complete"}
    failed = translate.client_response({"jsonrpc": "2.0", "id": "g", "error": {"code": -1, "message": "x"}}, "x", 5)
    assert failed == {"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "x"}}


def test_discover_from_an_initialize_result() -> None:
    initialized = {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {"listChanged": True}, "tasks": {"list": {}}},
        "serverInfo": {"name": "s", "version": "1"},
        "instructions": "be nice",
    }
    assert translate.discover_result(initialized) == {
        "resultType": "complete",
        "supportedVersions": ["2026-07-28"],
        "capabilities": {"tools": {"listChanged": True}},
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "s", "version": "1"}},
        "instructions": "be nice",
    }


def test_answer_in_json_and_sse() -> None:
    answer = {"jsonrpc": "2.0", "id": "g", "result": {}}
    assert translate.answer_in(json.dumps(answer).encode(), False, "g") == answer
    request = {"jsonrpc": "2.0", "id": "g", "method": "elicitation/create"}  # same id, but a request
    stream = f"id: 1\ndata:\n\ndata: {json.dumps(request)}\n\ndata: {json.dumps(answer)}\n".encode()
    assert translate.answer_in(stream, True, "g") == answer
    assert translate.answer_in(stream, True, "other") is None
    assert translate.answer_in(b"not json", False, "g") is None
