"""asgi.responses.read_body: the body read from `receive`, bounded as it arrives, kept for later reads."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from gateway import errors
from gateway.asgi.responses import read_body


def request(*messages: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Request, list[int]]:
    queue = list(messages)
    calls: list[int] = []

    async def receive() -> dict[str, Any]:
        calls.append(1)
        if not queue:
            raise AssertionError("receive() called after the body was read: it would wait for a disconnect")
        return queue.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers or []}
    return Request(scope, receive), calls


async def test_chunks_are_joined_and_a_second_read_gets_the_kept_body() -> None:
    req, calls = request(
        {"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}
    )
    assert await read_body(req, 10) == b"abc"
    assert await read_body(req, 10) == b"abc" and len(calls) == 2  # no third receive
    assert await req.body() == b"abc"  # starlette's own read sees it too
    with pytest.raises(errors.PayloadTooLarge):
        await read_body(req, 2)


async def test_the_bound_holds_as_the_body_arrives_and_before_it_when_declared() -> None:
    req, _ = request({"type": "http.request", "body": b"abc", "more_body": True})
    with pytest.raises(errors.PayloadTooLarge):
        await read_body(req, 2)
    declared, calls = request(headers=[(b"content-length", b"99")])
    with pytest.raises(errors.PayloadTooLarge):
        await read_body(declared, 10)
    assert calls == []  # refused on the declared length: nothing read


async def test_a_client_gone_midway_is_a_disconnect() -> None:
    req, _ = request({"type": "http.request", "body": b"a", "more_body": True}, {"type": "http.disconnect"})
    with pytest.raises(ClientDisconnect):
        await read_body(req, 10)
