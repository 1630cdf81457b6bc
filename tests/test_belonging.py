"""What a re-opened upstream stream may relay: plain values in, verdicts out."""

from __future__ import annotations

import json
from typing import Any

from gateway.wire.belonging import (
    FOREIGN_PROGRESS,
    FOREIGN_RESPONSE,
    NOT_JSONRPC,
    Sifted,
    progress_token,
    progress_tokens,
    sift,
)


def msg(**fields: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", **fields}


def progress(token: Any) -> dict[str, Any]:
    return msg(method="notifications/progress", params={"progressToken": token, "progress": 1})


def text(value: Any) -> str:
    return json.dumps(value)


def test_a_response_passes_only_for_a_request_pending_on_the_stream() -> None:
    assert sift(text(msg(id=1, result={})), pending=[1], tokens=()) == Sifted(text(msg(id=1, result={})))
    assert sift(text(msg(id="a", error={"code": 1})), pending=["a"], tokens=()).dropped == ()
    assert sift(text(msg(id=2, result={})), pending=[1], tokens=()) == Sifted(None, (FOREIGN_RESPONSE,))
    # An id is compared as JSON says it: 1 is not "1", and true is no id.
    assert sift(text(msg(id="1", result={})), pending=[1], tokens=()).dropped == (FOREIGN_RESPONSE,)
    assert sift(text(msg(id=True, result={})), pending=[1], tokens=()).dropped == (FOREIGN_RESPONSE,)
    assert sift(text(msg(id=None, error={"code": -32700})), pending=[1], tokens=()).dropped == (FOREIGN_RESPONSE,)


def test_a_get_stream_never_relays_a_response() -> None:
    # transports §Listening for Messages: the standalone stream carries no responses (nothing pending).
    assert sift(text(msg(id=1, result={})), pending=[], tokens=()).data is None


def test_progress_passes_only_for_the_streams_own_tokens() -> None:
    assert sift(text(progress("t1")), pending=[], tokens=("t1",)).data == text(progress("t1"))
    assert sift(text(progress(7)), pending=[], tokens=(7,)).dropped == ()
    assert sift(text(progress("t2")), pending=[], tokens=("t1",)) == Sifted(None, (FOREIGN_PROGRESS,))
    assert sift(text(progress(1)), pending=[], tokens=("1",)).dropped == (FOREIGN_PROGRESS,)
    assert sift(text(progress(None)), pending=[], tokens=("t1",)).dropped == (FOREIGN_PROGRESS,)
    assert sift(text(msg(method="notifications/progress")), pending=[], tokens=("t1",)).dropped == (FOREIGN_PROGRESS,)


def test_progress_passes_when_the_streams_tokens_were_not_recorded() -> None:
    assert sift(text(progress("t2")), pending=[], tokens=None).dropped == ()


def test_other_notifications_and_server_requests_pass() -> None:
    for item in (
        msg(method="notifications/message", params={"level": "info", "data": "x"}),
        msg(method="notifications/tools/list_changed"),
        msg(id="s1", method="sampling/createMessage", params={}),
        msg(id=5, method="ping"),
    ):
        assert sift(text(item), pending=[], tokens=()) == Sifted(text(item))


def test_what_is_not_a_json_rpc_message_is_dropped() -> None:
    for data in ("{}", "not json", "[]", "null", "3", text({"jsonrpc": "1.0", "id": 1, "result": {}})):
        assert sift(data, pending=[1], tokens=("t1",)) == Sifted(None, (NOT_JSONRPC,)), data
    assert sift(text(msg(id=1)), pending=[1], tokens=()).dropped == (NOT_JSONRPC,)  # neither result nor error
    assert sift(text(msg(method=3)), pending=[], tokens=()).dropped == (NOT_JSONRPC,)
    assert sift("[" * 100_000, pending=[], tokens=()).dropped == (NOT_JSONRPC,)


def test_a_batch_keeps_its_own_messages_only() -> None:
    batch = [progress("t1"), progress("t9"), msg(id=1, result={}), msg(id=2, result={}), {}]
    sifted = sift(text(batch), pending=[1], tokens=("t1",))
    assert sifted.data is not None and json.loads(sifted.data) == [progress("t1"), msg(id=1, result={})]
    assert sifted.dropped == (FOREIGN_PROGRESS, FOREIGN_RESPONSE, NOT_JSONRPC)
    whole = text([progress("t1"), msg(id=1, result={})])
    assert sift(whole, pending=[1], tokens=("t1",)) == Sifted(whole)  # untouched: the upstream's own bytes
    assert sift(text([progress("t9")]), pending=[], tokens=()) == Sifted(None, (FOREIGN_PROGRESS,))


def test_the_progress_tokens_of_requests() -> None:
    requests = [
        msg(id=1, method="tools/call", params={"name": "a", "_meta": {"progressToken": "p1"}}),
        msg(id=2, method="tools/call", params={"name": "b"}),
        msg(id=3, method="tools/call", params={"_meta": {"progressToken": 3}}),
        msg(id=4, method="tools/call", params={"_meta": {"progressToken": True}}),
        msg(id=5, method="tools/call", params=[1]),
        msg(id=6, method="ping"),
    ]
    assert progress_tokens(requests) == ("p1", 3)
    assert progress_token(msg(id=7, method="x", params={"_meta": "no"})) is None
