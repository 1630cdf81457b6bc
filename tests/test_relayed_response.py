"""gateway.asgi.responses.RelayedResponse: the same response as starlette's, built in one pass."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict
from starlette.responses import Response
from starlette.types import Message

from gateway.asgi.responses import RelayedResponse, client_headers, iterate, sse_response, with_cookies


async def sent(response: Response) -> list[Message]:
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await response({"type": "http", "method": "POST"}, receive, send)
    return messages


UPSTREAM = [
    [("Content-Type", "application/json"), ("Content-Length", "2"), ("Date", "x"), ("Server", "up")],
    [("content-type", "text/plain"), ("X-Trace", " a b "), ("Connection", "x-hop"), ("X-Hop", "1")],
    [("Mcp-Session-Id", "upstream-secret"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
    [],
]


@pytest.mark.parametrize("upstream", UPSTREAM)
@pytest.mark.parametrize("status", [200, 202, 204, 404, 500])
@pytest.mark.parametrize("session_id", [None, "S" * 32])
async def test_it_is_what_starlettes_response_with_the_client_headers_is(
    upstream: list[tuple[str, str]], status: int, session_id: str | None
) -> None:
    headers = CIMultiDict(upstream)
    body = b"" if status == 204 else b'{"ok":true}'
    to_client = client_headers(headers, session_id)
    expected = with_cookies(Response(body, status_code=status, headers=to_client), to_client)
    relayed = RelayedResponse(body, status, headers, session_id)
    assert relayed.raw_headers == expected.raw_headers
    assert (relayed.status_code, relayed.body, relayed.background) == (status, body, None)
    assert await sent(relayed) == await sent(expected)


async def test_each_set_cookie_of_the_upstream_stays_a_line_of_its_own() -> None:
    """RFC 9110 §5.3: Set-Cookie cannot be combined into one line; a dict kept only the last."""
    upstream = CIMultiDict([("Set-Cookie", "AWSALB=x; Path=/"), ("content-type", "application/json"),
                            ("set-cookie", " AWSALBCORS=y; SameSite=None ")])  # fmt: skip
    relayed = RelayedResponse(b"{}", 200, upstream, "S" * 32)
    cookies = [v for k, v in relayed.raw_headers if k == b"set-cookie"]
    assert cookies == [b"AWSALB=x; Path=/", b"AWSALBCORS=y; SameSite=None"]
    streamed = sse_response(iterate([b"data: 1\n\n"]), client_headers(upstream, "S" * 32))
    assert [v for k, v in streamed.raw_headers if k == b"set-cookie"] == cookies
    assert "set-cookie" not in client_headers(upstream, None)  # only in `cookies`: never folded
