"""gateway/bridging/onto_2026/headers.py: 2026-07-28 routing headers and Mcp-Param-* (transports
§Custom Headers from Tool Parameters), on plain values."""

from __future__ import annotations

from gateway.bridging.onto_2026.headers import encode_value, header_map, routing_headers, without_invalid_tools

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "opts": {"type": "object", "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
        "n": {"type": "integer", "x-mcp-header": "N"},
        "query": {"type": "string"},
    },
}


def test_value_encoding_examples_from_the_spec() -> None:
    assert encode_value("us-west1") == "us-west1"
    assert encode_value("Hello, 世界") == "=?base64?SGVsbG8sIOS4lueVjA==?="
    assert encode_value(" padded ") == "=?base64?IHBhZGRlZCA=?="
    assert encode_value("line1\nline2") == "=?base64?bGluZTEKbGluZTI=?="
    assert encode_value("=?base64?literal?=") == "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="


def test_header_map_walks_properties_chains() -> None:
    assert header_map(SCHEMA) == {("region",): "Region", ("opts", "dry"): "Dry", ("n",): "N"}


def test_invalid_annotations_make_the_tool_unusable() -> None:
    number = {"properties": {"x": {"type": "number", "x-mcp-header": "X"}}}
    twice = {"properties": {"a": {"type": "string", "x-mcp-header": "A"}, "b": {"type": "string", "x-mcp-header": "a"}}}
    bad_token = {"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}
    assert header_map(number) is None
    assert header_map(twice) is None
    assert header_map(bad_token) is None


def test_routing_headers_of_a_tool_call() -> None:
    message = {
        "method": "tools/call",
        "params": {"name": "sql", "arguments": {"region": "eu", "opts": {"dry": True}, "n": 42, "query": "q"}},
    }
    assert routing_headers(message, header_map(SCHEMA)) == {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "sql",
        "Mcp-Param-Region": "eu",
        "Mcp-Param-Dry": "true",
        "Mcp-Param-N": "42",
    }


def test_absent_values_send_no_header_and_other_methods_name_their_field() -> None:
    call = {"method": "tools/call", "params": {"name": "sql", "arguments": {"query": "q"}}}
    assert "Mcp-Param-Region" not in routing_headers(call, header_map(SCHEMA))
    read = {"method": "resources/read", "params": {"uri": "file:///a b"}}
    assert routing_headers(read, None)["Mcp-Name"] == encode_value("file:///a b")
    assert "Mcp-Name" not in routing_headers({"method": "tools/list"}, None)


def test_tools_with_invalid_annotations_are_left_out_of_the_list() -> None:
    bad = {"name": "bad", "inputSchema": {"properties": {"x": {"type": "number", "x-mcp-header": "X"}}}}
    good = {"name": "good", "inputSchema": SCHEMA}
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [bad, good], "nextCursor": "c"}}
    assert without_invalid_tools(answer) == {"jsonrpc": "2.0", "id": 1, "result": {"tools": [good], "nextCursor": "c"}}
    clean = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [good]}}
    assert without_invalid_tools(clean) is clean
