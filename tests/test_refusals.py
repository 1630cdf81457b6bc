"""DrainRefusedBodies with plain ASGI callables: answer first, then drain, within the bound."""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gateway.http.refusals import DrainRefusedBodies


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"no"})


async def run(chunks: int, limit: int, headers: list[tuple[bytes, bytes]]) -> tuple[list[Message], int]:
    pending = [{"type": "http.request", "body": b"x" * 10, "more_body": i < chunks - 1} for i in range(chunks)]
    read = 0

    async def receive() -> Message:
        nonlocal read
        read += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "headers": headers}
    await DrainRefusedBodies(refuse, limit=limit)(scope, receive, send)
    return sent, read


async def test_refusal_is_written_whole_then_the_body_drained() -> None:
    sent, read = await run(chunks=5, limit=1000, headers=[(b"content-length", b"50")])
    assert read == 5  # every chunk was read, after the answer went out
    assert (b"connection", b"close") in sent[0]["headers"]
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [(b"no", True), (b"", False)]


async def test_drain_stops_at_the_bound() -> None:
    _, read = await run(chunks=100, limit=25, headers=[(b"content-length", b"1000")])
    assert read == 3  # 30 bytes read > 25: stop


async def test_requests_without_a_body_pass_through() -> None:
    sent, read = await run(chunks=1, limit=1000, headers=[])
    assert read == 0 and sent[1] == {"type": "http.response.body", "body": b"no"}
