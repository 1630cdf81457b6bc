"""Pure protocol rules of HTTP headers: Content-Type/Accept, Origin, session ids, header forwarding."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.wire import protocol

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
    protocol.check_post_headers(content_type, accept)  # accepted: no refusal raised


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
    protocol.check_get_accept(accept)  # accepted: no refusal raised


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
        # not a serialized origin (scheme://host[:port]), though a lax parse finds localhost in it
        "http://localhost:80.evil.com",
        "http://localhost:99999",
        "http://localhost:",
        "http://evil.com@localhost",
        "http://localhost@evil.com",
        "http://localhost/",
        "http://localhost?x",
        "http://localhost#x",
        "ftp://localhost",
        "localhost",
        "http://local host",
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


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Type", "application/json"), ("X-A", "1"), ("x-a", "2"), ("Server", "up")],
        [("Connection", "X-Hop, keep-alive"), ("X-Hop", "1"), ("Accept", " */* ")],
        [("MCP-Custom", "v"), ("Mcp-Session-Id", "secret")],
    ],
)
def test_forward_with_lower_names_is_the_copy_with_its_names_lower_cased(headers: list[tuple[str, str]]) -> None:
    for drop in (protocol.DROP_TO_CLIENT, protocol.DROP_TO_UPSTREAM):
        copied = protocol.forward_headers(headers, drop)
        lowered: dict[str, str] = {}
        for name, value in copied.items():  # names that differ in case only: one line, values in order
            lowered[name.lower()] = f"{lowered[name.lower()]}, {value}" if name.lower() in lowered else value
        assert protocol.forward_headers(headers, drop, lower_names=True) == lowered


def test_a_repeated_field_keeps_all_its_values_in_order() -> None:
    # RFC 9110 §5.3: field lines of one name are one comma-separated list; Cookie joins with "; "
    incoming = [("accept", "application/json"), ("x-tag", "10.0.0.1"), ("accept", "text/event-stream"),
                ("cookie", "a=1"), ("x-tag", " 10.0.0.2 "), ("cookie", "b=2")]  # fmt: skip
    out = protocol.forward_headers(incoming, protocol.DROP_TO_UPSTREAM)
    assert out == {
        "accept": "application/json, text/event-stream",
        "x-tag": "10.0.0.1, 10.0.0.2",
        "cookie": "a=1; b=2",
    }


def test_what_an_upstream_says_of_itself_and_its_cors_answers_are_not_relayed() -> None:
    upstream = [
        ("X-Powered-By", "Express"),
        ("Server", "uvicorn"),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Alt-Svc", 'h3=":443"'),
        ("Content-Type", "application/json"),
        ("Set-Cookie", "a=1"),
    ]
    out = protocol.forward_headers(upstream, protocol.DROP_TO_CLIENT, lower_names=True)
    assert out == {"content-type": "application/json", "set-cookie": "a=1"}
