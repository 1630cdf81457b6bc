"""The metrics listener's answers, from plain bytes (no socket)."""

from __future__ import annotations

from gateway.http.scrape import answer


def render() -> bytes:
    return b"mcpgw_x 1.0\n"


def status(response: bytes) -> bytes:
    return response.split(b" ", 2)[1]


def test_only_get_metrics_is_served() -> None:
    ok = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", render)
    assert status(ok) == b"200" and ok.endswith(b"mcpgw_x 1.0\n") and b"Connection: close" in ok
    assert status(answer(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", render)) == b"200"
    head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", render)
    assert status(head) == b"200" and head.endswith(b"\r\n\r\n")
    assert status(answer(b"GET /mcp HTTP/1.1\r\n\r\n", render)) == b"404"
    assert status(answer(b"POST /metrics HTTP/1.1\r\n\r\n", render)) == b"405"
    assert status(answer(b"garbage\r\n\r\n", render)) == b"400"
