"""gateway.eras.responses.RelayedResponse: the same response as starlette's, built in one pass."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict
from starlette.responses import Response

from gateway.eras.responses import RelayedResponse, client_headers


async def sent(response: Response) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
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
    expected = Response(body, status_code=status, headers=client_headers(headers, session_id))
    relayed = RelayedResponse(body, status, headers, session_id)
    assert relayed.raw_headers == expected.raw_headers
    assert (relayed.status_code, relayed.body, relayed.background) == (status, body, None)
    assert await sent(relayed) == await sent(expected)
