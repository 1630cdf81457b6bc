"""gateway.http.requests: the endpoint's headers answer as starlette's `Headers` do."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from gateway.http.requests import IndexedHeaders, McpRequest

RAW = [(b"host", b"x"), (b"mcp-session-id", b"abc"), (b"accept", b"application/json"), (b"accept", b"text/html")]


def test_lookups_match_starlettes_headers() -> None:
    indexed, plain = IndexedHeaders({"type": "http", "headers": list(RAW)}), Headers(raw=list(RAW))
    for name in ("Mcp-Session-Id", "mcp-session-id", "ACCEPT", "host", "missing"):
        assert indexed.get(name) == plain.get(name)  # the first of a repeated name wins
        assert (name in indexed) == (name in plain)
    assert indexed.get("missing", "d") == "d" and indexed["Accept"] == "application/json"
    assert indexed.items() == plain.items() and indexed.getlist("accept") == plain.getlist("accept")
    not_a_name: object = 3
    assert not_a_name not in indexed


def test_the_request_builds_its_headers_once() -> None:
    request = McpRequest({"type": "http", "method": "POST", "path": "/mcp", "headers": list(RAW)})
    assert type(request.headers) is IndexedHeaders and request.headers is request.headers
    assert request.headers.get("MCP-SESSION-ID") == "abc"


def test_the_request_state_keeps_its_two_attributes_in_slots_and_the_rest_in_the_scope() -> None:
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": list(RAW), "state": {"seen": 1}}
    request = McpRequest(scope)
    request.state.principal = "alice"
    request.state.client_key = "ip:1.2.3.4"
    request.state.other = "x"
    assert (request.state.principal, request.state.client_key, request.state.seen) == ("alice", "ip:1.2.3.4", 1)
    assert scope["state"] == {"seen": 1, "other": "x"}  # what starlette's State keeps there, as before
    assert request.state is request.state
    with pytest.raises(AttributeError):
        _ = request.state.missing


def test_the_request_sets_what_starlettes_request_sets() -> None:
    """`McpRequest.__init__` sets starlette's attributes itself (no super call): an upgrade that
    adds one fails here."""
    from starlette.requests import Request

    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": tuple(RAW), "state": {}}
    plain, ours = Request(dict(scope)), McpRequest(dict(scope))
    assert set(vars(plain)) <= set(vars(ours))
    assert {k: v for k, v in vars(plain).items() if k != "scope"} == {
        k: v for k, v in vars(ours).items() if k in vars(plain) and k != "scope"
    }
    assert ours.scope["headers"] == RAW and type(ours.scope["headers"]) is list  # as `Headers(scope=...)` leaves it
    assert vars(ours.state) == vars(plain.state) and ours.state._state is ours.scope["state"]
