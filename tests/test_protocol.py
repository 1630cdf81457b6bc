"""Pure protocol rules of JSON-RPC and versions: MCP-Protocol-Version, peek, parse_body, initialize."""

from __future__ import annotations

import json

import pytest

from gateway import errors
from gateway.wire import protocol

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
