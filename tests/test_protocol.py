"""Pure protocol rules: versions, JSON-RPC classification, media types, Origin, ids, headers."""

from __future__ import annotations

import json

import pytest

from gateway import errors, protocol

# --- header_version ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_header_version_absent_means_2025_03_26(value: str | None) -> None:
    assert protocol.header_version(value) == "2025-03-26"
    assert protocol.DEFAULT_VERSION == "2025-03-26"


@pytest.mark.parametrize("version", [*protocol.SESSIONFUL_VERSIONS, *protocol.STATELESS_VERSIONS])
def test_header_version_supported(version: str) -> None:
    assert protocol.header_version(version) == version


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":3,"method":"x"}', (3, "x")),
        (b'{"id":"a"}', ("a", None)),
        (b'{"id":null,"method":7}', (None, None)),
        (b'{"id":false}', (None, None)),
        (b'{"id":1.5}', (None, None)),
        (b"[]", (None, None)),
        (b"\xff", (None, None)),
        (b"[" * 100000, (None, None)),
    ],
)
def test_peek(raw: bytes, expected: tuple[object, object]) -> None:
    assert protocol.peek(raw) == expected


def test_versions_for() -> None:
    every = [*protocol.SESSIONFUL_VERSIONS, *protocol.STATELESS_VERSIONS]
    assert protocol.versions_for(has_session=True, method="tools/list") == every
    assert protocol.versions_for(has_session=False, method="initialize") == every
    # no session and no initialize: only the stateless era could serve it
    assert protocol.versions_for(has_session=False, method="server/discover") == ["2026-07-28"]
    assert protocol.versions_for(has_session=False, method=None) == ["2026-07-28"]


def test_stateless_era() -> None:
    assert protocol.is_stateless("2026-07-28")
    assert not any(protocol.is_stateless(v) for v in protocol.SESSIONFUL_VERSIONS)


@pytest.mark.parametrize("value", ["2024-11-05", "1999-01-01", "garbage", "2025-06-18 "])
def test_header_version_unsupported(value: str) -> None:
    with pytest.raises(errors.UnsupportedVersion) as info:
        protocol.header_version(value)
    exc = info.value
    assert exc.status == 400 and exc.code == -32022
    assert exc.data["requested"] == value
    assert set(exc.data["supported"]) == {*protocol.SESSIONFUL_VERSIONS, *protocol.STATELESS_VERSIONS}
    shaped = exc.to_jsonrpc(None)
    assert shaped["error"]["data"] == exc.data
    assert shaped["id"] is None


# --- parse_body ----------------------------------------------------------------------------


def _raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_parse_single_request() -> None:
    body = protocol.parse_body(_raw({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}), "2025-06-18")
    assert not body.is_batch
    (message,) = body.messages
    assert message.is_request and not message.is_notification and not message.is_response
    assert message.method == "tools/list"
    assert message.id == 7
    assert body.request_ids == (7,)
    assert body.first_id == 7
    assert body.initialize is None


def test_parse_string_id() -> None:
    body = protocol.parse_body(_raw({"jsonrpc": "2.0", "id": "abc", "method": "ping"}), "2025-11-25")
    assert body.first_id == "abc"


def test_parse_notification() -> None:
    body = protocol.parse_body(_raw({"jsonrpc": "2.0", "method": "notifications/initialized"}), "2025-06-18")
    (message,) = body.messages
    assert message.is_notification and not message.is_request and not message.is_response
    assert message.id is None
    assert body.requests == ()
    assert body.request_ids == ()
    assert body.first_id is None


@pytest.mark.parametrize(
    "obj",
    [
        {"jsonrpc": "2.0", "id": 3, "result": {}},
        {"jsonrpc": "2.0", "id": "x", "error": {"code": -1, "message": "no"}},
    ],
)
def test_parse_response(obj: dict[str, object]) -> None:
    body = protocol.parse_body(_raw(obj), "2025-06-18")
    (message,) = body.messages
    assert message.is_response and not message.is_request and not message.is_notification
    assert body.requests == ()
    assert body.first_id is None


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"jsonrpc": "2.0",}', b"\xff\xfe\x00"])
def test_parse_error(raw: bytes) -> None:
    with pytest.raises(errors.ParseError) as info:
        protocol.parse_body(raw, "2025-06-18")
    assert info.value.code == -32700
    assert info.value.status == 400


@pytest.mark.parametrize(
    "obj",
    [
        {"id": 1, "method": "x"},  # no jsonrpc
        {"jsonrpc": "1.0", "id": 1, "method": "x"},
        {"jsonrpc": 2.0, "id": 1, "method": "x"},
        "a string",
        42,
        None,
        {"jsonrpc": "2.0", "id": None, "method": "x"},  # null id
        {"jsonrpc": "2.0", "id": True, "method": "x"},  # bool id
        {"jsonrpc": "2.0", "id": 1.5, "method": "x"},  # float id
        {"jsonrpc": "2.0", "id": [1], "method": "x"},
        {"jsonrpc": "2.0", "id": 1, "method": 5},  # non-string method
        {"jsonrpc": "2.0", "method": None},
        {"jsonrpc": "2.0", "id": 1},  # neither request nor response
        {"jsonrpc": "2.0"},
    ],
)
def test_invalid_request(obj: object) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        protocol.parse_body(_raw(obj), "2025-03-26")
    assert info.value.code == -32600
    assert info.value.status == 400


def test_empty_batch_is_invalid() -> None:
    with pytest.raises(errors.InvalidRequest):
        protocol.parse_body(b"[]", "2025-03-26")


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25", "2026-07-28"])
def test_batch_rejected_after_2025_03_26(version: str) -> None:
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}]
    with pytest.raises(errors.InvalidRequest):
        protocol.parse_body(_raw(batch), version)


def test_batch_in_2025_03_26() -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "notifications/progress"},
        {"jsonrpc": "2.0", "id": "a", "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}},
        {"jsonrpc": "2.0", "id": 9, "result": {}},
    ]
    body = protocol.parse_body(_raw(batch), "2025-03-26")
    assert body.is_batch
    assert len(body.messages) == 4
    assert [m.method for m in body.requests] == ["tools/list", "initialize"]
    assert body.request_ids == ("a", 2)
    assert body.first_id == "a"
    assert body.initialize is not None and body.initialize.id == 2
    assert protocol.initialize_version(body) == "2025-03-26"


def test_batch_with_one_bad_member_is_invalid() -> None:
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": None, "method": "x"}]
    with pytest.raises(errors.InvalidRequest):
        protocol.parse_body(_raw(batch), "2025-03-26")


# --- initialize / negotiation ---------------------------------------------------------------


def _init(params: object) -> protocol.Body:
    return protocol.parse_body(
        _raw({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}), "2025-06-18"
    )


def test_initialize_version() -> None:
    body = _init({"protocolVersion": "2025-11-25", "capabilities": {}})
    assert body.initialize is body.messages[0]
    assert protocol.initialize_version(body) == "2025-11-25"


@pytest.mark.parametrize("params", [None, [], {}, {"protocolVersion": 5}, "x"])
def test_initialize_version_missing(params: object) -> None:
    assert protocol.initialize_version(_init(params)) is None


def test_initialize_version_without_initialize() -> None:
    body = protocol.parse_body(_raw({"jsonrpc": "2.0", "id": 1, "method": "ping"}), "2025-06-18")
    assert protocol.initialize_version(body) is None


def test_initialize_notification_is_not_initialize() -> None:
    body = protocol.parse_body(_raw({"jsonrpc": "2.0", "method": "initialize"}), "2025-06-18")
    assert body.initialize is None


def test_negotiated_version() -> None:
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}}
    assert protocol.negotiated_version(answer, "2025-11-25") == "2025-06-18"
    empty = {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert protocol.negotiated_version(empty, "2025-11-25") == "2025-11-25"
    assert protocol.negotiated_version({"error": {"code": 1}}, "2025-11-25") == "2025-11-25"
    assert protocol.negotiated_version({"result": {"protocolVersion": 3}}, None) == "2025-03-26"
    assert protocol.negotiated_version({"result": "x"}, None) == protocol.DEFAULT_VERSION


# --- media types ----------------------------------------------------------------------------

BOTH = "application/json, text/event-stream"


@pytest.mark.parametrize(
    ("content_type", "accept"),
    [
        ("application/json", BOTH),
        ("application/json; charset=utf-8", BOTH),
        ("Application/JSON", "TEXT/EVENT-STREAM, APPLICATION/JSON"),
        ("application/json", "text/event-stream;q=0.9, application/json;q=1.0"),
        ("application/json", "*/*"),
        ("application/json", "application/*, text/*"),
        ("application/json", "application/json, text/*"),
        ("application/json", "text/html, */*;q=0.1"),
    ],
)
def test_post_headers_ok(content_type: str, accept: str) -> None:
    assert protocol.check_post_headers(content_type, accept) is None


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/jsonx", "application/xml"])
def test_post_unsupported_media_type(content_type: str | None) -> None:
    with pytest.raises(errors.UnsupportedMediaType) as info:
        protocol.check_post_headers(content_type, BOTH)
    assert info.value.status == 415


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "application/json",
        "text/event-stream",
        "text/html",
        "application/*",
        "text/*",
        "application/json; charset=utf-8",
    ],
)
def test_post_not_acceptable(accept: str | None) -> None:
    with pytest.raises(errors.NotAcceptable) as info:
        protocol.check_post_headers("application/json", accept)
    assert info.value.status == 406


@pytest.mark.parametrize("accept", ["text/event-stream", "text/*", "*/*", BOTH, "text/event-stream; charset=utf-8"])
def test_get_accept_ok(accept: str) -> None:
    assert protocol.check_get_accept(accept) is None


@pytest.mark.parametrize("accept", [None, "", "application/json", "application/*", "text/html"])
def test_get_not_acceptable(accept: str | None) -> None:
    with pytest.raises(errors.NotAcceptable) as info:
        protocol.check_get_accept(accept)
    assert info.value.status == 406


# --- Origin ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "http://localhost",
        "http://localhost:3000",
        "https://localhost:8443",
        "http://127.0.0.1",
        "http://127.0.0.1:6274",
        "http://[::1]",
        "http://[::1]:8080",
    ],
)
def test_origin_local_allowed_by_default(origin: str | None) -> None:
    assert protocol.origin_allowed(origin, []) is True


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://evil.example:443",
        "http://localhost.evil.example",
        "http://127.0.0.2",
        "null",
        "",
        "http://10.0.0.1:8080",
    ],
)
def test_origin_foreign_denied(origin: str) -> None:
    assert protocol.origin_allowed(origin, []) is False
    assert protocol.origin_allowed(origin, ["https://app.example"]) is False


def test_origin_configured() -> None:
    allowed = ["https://app.example", "https://other.example:8443"]
    assert protocol.origin_allowed("https://app.example", allowed) is True
    assert protocol.origin_allowed("https://other.example:8443", allowed) is True
    assert protocol.origin_allowed("https://other.example", allowed) is False
    assert protocol.origin_allowed("http://app.example", allowed) is False
    assert protocol.origin_allowed("http://evil.example", allowed) is False


def test_origin_wildcard() -> None:
    assert protocol.origin_allowed("http://evil.example", ["*"]) is True
    assert protocol.origin_allowed("null", ("*",)) is True


def test_origin_malformed_is_denied_not_raised() -> None:
    assert protocol.origin_allowed("http://[::1", []) is False


# --- session ids ----------------------------------------------------------------------------


def test_new_session_id_shape_and_entropy() -> None:
    ids = {protocol.new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert protocol.SESSION_ID_BYTES * 8 >= 128
    for sid in ids:
        assert len(sid) == 32
        assert all(0x21 <= ord(ch) <= 0x7E for ch in sid)
        assert protocol.valid_session_id(sid)


@pytest.mark.parametrize(
    "value",
    ["", "a" * 31, "a" * 33, "a" * 31 + "!", "a" * 31 + " ", "a" * 31 + "\n", "é" * 32, "a" * 16 + "/" * 16],
)
def test_valid_session_id_rejects(value: str) -> None:
    assert protocol.valid_session_id(value) is False


def test_valid_session_id_accepts_urlsafe() -> None:
    assert protocol.valid_session_id("A-_z09" + "b" * 26)


# --- header forwarding -------------------------------------------------------------------------


def test_forward_to_upstream() -> None:
    incoming = [
        ("Host", "gateway.example"),
        ("Mcp-Session-Id", "gateway-session"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Content-Length", "12"),
        ("Last-Event-ID", "abc.1"),
        ("Origin", "http://localhost"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("MCP-Protocol-Version", "2025-06-18"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Something-New", "kept"),
        ("Authorization", "Bearer t"),
        ("Content-Type", "application/json"),
    ]
    out = protocol.forward_headers(incoming, protocol.DROP_TO_UPSTREAM)
    assert out == {
        "MCP-Protocol-Version": "2025-06-18",
        "Mcp-Method": "tools/call",
        "Mcp-Something-New": "kept",
        "Authorization": "Bearer t",
        "Content-Type": "application/json",
    }


def test_forward_to_client() -> None:
    upstream = [
        ("mcp-session-id", "upstream-secret"),
        ("MCP-SESSION-ID", "upstream-secret"),
        ("connection", "close"),
        ("transfer-encoding", "chunked"),
        ("content-length", "5"),
        ("content-encoding", "gzip"),
        ("server", "upstream/1.0"),
        ("content-type", "text/event-stream"),
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-custom", "1"),
    ]
    out = protocol.forward_headers(upstream, protocol.DROP_TO_CLIENT)
    assert out == {
        "content-type": "text/event-stream",
        "mcp-protocol-version": "2025-11-25",
        "mcp-custom": "1",
    }
    assert "upstream-secret" not in out.values()


def test_hop_by_hop_in_both_drop_sets() -> None:
    assert protocol.HOP_BY_HOP <= protocol.DROP_TO_UPSTREAM
    assert protocol.HOP_BY_HOP <= protocol.DROP_TO_CLIENT
    assert protocol.H_SESSION in protocol.DROP_TO_UPSTREAM and protocol.H_SESSION in protocol.DROP_TO_CLIENT
    assert protocol.H_VERSION not in protocol.DROP_TO_UPSTREAM | protocol.DROP_TO_CLIENT
    assert all(name == name.lower() for name in protocol.DROP_TO_UPSTREAM | protocol.DROP_TO_CLIENT)


def test_forward_drops_fields_named_in_connection() -> None:
    out = protocol.forward_headers(
        [("Connection", "X-Hop"), ("X-Hop", "1"), ("Accept", "*/*")], protocol.DROP_TO_UPSTREAM
    )
    assert out == {"Accept": "*/*"}


def test_forward_trims_ows_around_values() -> None:
    # RFC 9110 §5.5: OWS around a field value is not part of it
    out = protocol.forward_headers([("Mcp-Name", "  echo \t"), ("X-Keep", "a  b")], protocol.DROP_TO_UPSTREAM)
    assert out == {"Mcp-Name": "echo", "X-Keep": "a  b"}
