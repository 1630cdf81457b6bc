"""The pump's resumption rules without sockets: a fake event log and a fake upstream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.store.sessions import SessionRecord
from gateway.streams.opening import Opening
from gateway.streams.pump import RECENT_IDS, Pump, PumpConfig
from gateway.streams.sifting import ReplaySifter
from gateway.streams.signals import Signal
from gateway.wire import sse
from gateway.wire.belonging import FOREIGN_PROGRESS, FOREIGN_RESPONSE, NOT_JSONRPC


class FakeLog:
    def __init__(self) -> None:
        self.seq = 0
        self.entries: list[str] = []
        self.finals = 0
        self.opened: list[int] = []  # events written by each open

    async def open(self, session: str, stream: str, *, events: Any = (), **kw: Any) -> int:
        self.opened.append(len(events))
        self.entries.extend(data for data, _ in events)
        self.seq += len(events) + (1 if kw.get("final") else 0)
        self.finals += 1 if kw.get("final") else 0
        return self.seq

    async def release(self, session: str, stream: str, owner: str) -> bool:
        return True

    async def append(self, session: str, stream: str, owner: str, events: list[tuple[str, str]], **kw: Any) -> int:
        assert kw["expect"] == self.seq  # the pump always says where it left the log
        self.entries.extend(data for data, _ in events)
        self.seq += len(events) + (1 if kw.get("final") else 0)
        self.finals += 1 if kw.get("final") else 0
        return self.seq


class FakeResponse:
    status = 200
    is_sse = True

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def next_chunk(self, timeout: float) -> bytes | None:
        body, self._body = self._body, b""
        return body or None

    def take_buffered(self) -> bytes:
        body, self._body = self._body, b""
        return body

    def forget_headers(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeUpstream:
    """Answers every resume GET with a replay of what its store holds after Last-Event-ID."""

    def __init__(self, store: list[tuple[str, str]]) -> None:
        self.store = store
        self.resumes: list[str] = []

    async def send(self, method: str, instance: str, headers: dict[str, str], *a: Any, **kw: Any) -> FakeResponse:
        after = {k.lower(): v for k, v in headers.items()}["last-event-id"]
        self.resumes.append(after)
        ids = [eid for eid, _ in self.store]
        tail = self.store[ids.index(after) + 1 :]
        return FakeResponse(b"".join(sse.encode(data or None, id=eid) for eid, data in tail))


def progress(n: int, token: str = "t1") -> str:
    params = {"progressToken": token, "progress": n}
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})


def pump(log: FakeLog, upstream: FakeUpstream) -> Pump:
    record = SessionRecord(id="s", pool="default", instance="http://up", upstream_sid="u", protocol="2025-11-25")
    return Pump(
        log=log,  # type: ignore[arg-type]
        upstream=upstream,  # type: ignore[arg-type]
        config=PumpConfig(idle_timeout=30),
        record=record,
        stream="S",
        kind="post",
        pending=[1],
        owner="me",
        signal=Signal(),
        uid="u3",
        tokens=("t1",),
    )


async def test_resumed_stream_catches_up_what_the_replay_live_window_skipped() -> None:
    """The upstream replayed u4, primed the connection, then sent u6 live: u5, produced while it
    replayed, is in its store but came on no connection. The pump fetches it before going on."""
    answer = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}})
    store = [("u3", progress(3)), ("u4", progress(4)), ("u5", progress(5)), ("prime", ""), ("u6", progress(6))]
    log, upstream = FakeLog(), FakeUpstream(store)
    p = pump(log, upstream)
    p._boundary = True  # the pump had just re-opened the upstream stream (a takeover)
    live = [sse.Event(progress(4), "u4"), sse.Event("", "prime"), sse.Event(progress(6), "u6"), sse.Event(answer, "u7")]
    await p._handle(live, resumed=True)
    assert log.entries == [progress(4), progress(5), progress(6), answer]  # in order, each once
    assert upstream.resumes == ["u4"]  # one extra replay, from the newest logged id
    assert p.finished and log.finals == 1 and p.pending == []


async def test_no_catch_up_on_a_fresh_stream_or_after_the_boundary() -> None:
    log, upstream = FakeLog(), FakeUpstream([("u3", "")])
    p = pump(log, upstream)
    await p._handle([sse.Event("", "prime"), sse.Event(progress(1), "u4")], resumed=False)  # a first connection
    assert upstream.resumes == [] and log.entries == [progress(1)]


def test_recent_ids_keep_at_least_the_newest() -> None:
    p = pump(FakeLog(), FakeUpstream([]))
    for n in range(1000):
        p._remember(str(n))
        assert str(n) in p._recent
    assert len(p._recent) <= RECENT_IDS + RECENT_IDS // 4
    assert p._recent[-RECENT_IDS:] == [str(n) for n in range(1000 - RECENT_IDS, 1000)]


async def test_a_new_stream_is_opened_with_what_arrived_and_its_request_told() -> None:
    answer = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}})
    log = FakeLog()
    p = pump(log, FakeUpstream([]))
    p.opening = Opening("", None, asyncio.get_running_loop().create_future())
    done = p.opening.done
    body = sse.encode(progress(1), id="u4") + sse.encode(answer, id="u5")
    await p.run(FakeResponse(body))  # type: ignore[arg-type]
    assert log.opened == [2] and log.entries == [progress(1), answer] and log.finals == 1
    assert done.done() and done.exception() is None and p.finished and p.opening is None


async def test_a_request_that_stopped_waiting_for_the_opening_does_not_stop_the_pump() -> None:
    """Its client left while the stream was being created: the pump goes on (disconnect is not
    cancellation) and the stream is complete."""
    answer = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}})
    log = FakeLog()
    p = pump(log, FakeUpstream([]))
    p.opening = Opening("", None, asyncio.get_running_loop().create_future())
    p.opening.done.cancel()  # what awaiting it in a cancelled request task does
    await p.run(FakeResponse(sse.encode(answer, id="u5")))  # type: ignore[arg-type]
    assert log.opened == [1] and p.finished and log.finals == 1


async def test_a_reopened_stream_relays_only_what_belongs_to_it(caplog: pytest.LogCaptureFixture) -> None:
    """server-everything replays every later event of the session and its own `{}` markers: the
    pump keeps this stream's progress and answer, drops the rest, counts each and logs once."""
    mine = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}})
    other = json.dumps({"jsonrpc": "2.0", "id": 9, "result": {}})
    logging_ = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}})
    log = FakeLog()
    p = pump(log, FakeUpstream([]))
    counted: list[str] = []
    p.dropped = counted.append
    replay = [
        ("u4", "{}"),
        ("u5", progress(4, token="t9")),
        ("u6", progress(4)),
        ("u7", logging_),
        ("u8", other),
        ("u9", mine),
    ]
    caplog.set_level(logging.INFO, logger="gateway.streams.pump")
    await p._consume(FakeResponse(b"".join(sse.encode(d, id=i) for i, d in replay)), resumed=True)  # type: ignore[arg-type]
    assert log.entries == [progress(4), logging_, mine]
    assert counted == [NOT_JSONRPC, FOREIGN_PROGRESS, FOREIGN_RESPONSE]
    assert p.uid == "u9" and p.finished and p.pending == []
    ReplaySifter.told(p._sifter)
    ReplaySifter.told(p._sifter)
    told = [r for r in caplog.records if "not this stream's" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO
    assert "1 foreign_progress, 1 foreign_response, 1 not_jsonrpc" in told[0].getMessage()


async def test_a_first_connection_is_relayed_as_it_comes() -> None:
    """Only a re-opened connection is sifted: a live stream's events are the upstream's to choose."""
    log = FakeLog()
    p = pump(log, FakeUpstream([]))
    counted: list[str] = []
    p.dropped = counted.append
    await p._handle([sse.Event(progress(1, token="elsewhere"), "u4")], resumed=False)
    assert log.entries == [progress(1, token="elsewhere")] and counted == []


async def test_a_get_stream_that_cannot_resume_with_nothing_pending_ends_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = FakeLog()
    p = pump(log, FakeUpstream([]))
    p.kind, p.pending, p.uid = "get", [], ""
    caplog.set_level(logging.INFO, logger="gateway.streams.pump")
    await p.run(None)
    ended = [r for r in caplog.records if "could not be resumed" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO and log.finals == 1
