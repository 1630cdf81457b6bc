"""The merged notification stream of a virtual session: renaming and merging (no sockets)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.virtual.listening import (
    TOOLS_CHANGED,
    MergedResponse,
    _once,
    _renamed,
    member_request_id,
    request_id_of,
)
from gateway.virtual.naming import VirtualServer
from gateway.wire import sse

SERVER = VirtualServer("all", ("search", "files"), "__")


@pytest.mark.parametrize("request_id", [0, 7, "abc", "a__b"])
def test_a_members_request_id_round_trips(request_id: int | str) -> None:
    assert member_request_id(SERVER, request_id_of(SERVER, "files", request_id)) == ("files", request_id)


@pytest.mark.parametrize("value", [7, "plain", "nobody__1", "files__not json", None])
def test_other_ids_name_no_member(value: object) -> None:
    assert member_request_id(SERVER, value) is None


def test_server_requests_are_renamed_notifications_are_not() -> None:
    request = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage", "params": {}})
    assert json.loads(_renamed(SERVER, "search", request))["id"] == "search__3"
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "x"}})
    assert _renamed(SERVER, "search", note) == note


def test_list_changed_once_per_batch() -> None:
    log = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {}})
    prompts = json.dumps({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"})
    batch = [TOOLS_CHANGED, log, TOOLS_CHANGED, prompts, log, prompts]
    assert _once(batch) == [TOOLS_CHANGED, log, prompts, log]


async def test_the_merged_response_reads_as_sse_and_ends_with_the_session() -> None:
    merged = MergedResponse()
    assert merged.is_sse and merged.take_buffered() == b""
    merged.put(TOOLS_CHANGED)
    merged.put(TOOLS_CHANGED)
    chunk = await merged.next_chunk(1.0)
    assert chunk is not None
    assert [e.data for e in sse.Parser().feed(chunk)] == [TOOLS_CHANGED]
    with pytest.raises(TimeoutError):
        await merged.next_chunk(0.01)  # nothing came: the pump's idle bound counts
    merged.put(None)
    assert await merged.next_chunk(1.0) is None
    merged.close()
    await asyncio.sleep(0)
