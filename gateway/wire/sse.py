"""Server-Sent Events: a pure encoder and an incremental parser (WHATWG HTML §9.2.6).

The parser is fed bytes as they arrive and returns complete events; it keeps at most one
partial line plus one partial event, and refuses lines longer than `max_line` so a hostile
upstream cannot grow a replica's memory without bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True)
class Event:
    """One dispatched SSE event. `data` is None when the block had no `data` field."""

    data: str | None = None
    id: str | None = None
    event: str | None = None
    retry: int | None = None


class SSEError(ValueError):
    """Malformed or oversized SSE input."""


def encode(data: str | None, *, id: str | None = None, event: str | None = None, retry: int | None = None) -> bytes:
    """Encode one event; `data=None` with an id gives a priming event (`data:` empty)."""
    parts: list[str] = []
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise SSEError("event id must not contain newlines or NUL")
        parts.append(f"id: {id}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    if retry is not None:
        parts.append(f"retry: {retry}\n")
    lines = (data or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    parts.extend(f"data: {line}\n" if line else "data:\n" for line in lines)
    parts.append("\n")
    return "".join(parts).encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def retry_hint(ms: int) -> bytes:
    """A field-only block: sets the client's reconnection delay without dispatching an event."""
    return f"retry: {ms}\n\n".encode()


class Parser:
    """Incremental SSE parser: `feed(chunk)` returns the events completed by that chunk."""

    __slots__ = ("_buf", "_data", "_event", "_has_data", "_id", "_max_line", "_retry", "_skip_lf", "_touched")

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._max_line = max_line
        self._buf = b""
        self._skip_lf = False
        self._data: list[str] = []
        self._has_data = False
        self._id: str | None = None
        self._event: str | None = None
        self._retry: int | None = None
        self._touched = False

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        buf = self._buf + chunk
        if not self._skip_lf and b"\r" not in buf:
            # Every line ends with LF (what servers send): split once instead of a search per line.
            *lines, rest = buf.split(b"\n")
            for line in lines:
                event = self._line(line)
                if event is not None:
                    events.append(event)
            self._buf = rest
            if len(rest) > self._max_line:
                raise SSEError(f"SSE line longer than {self._max_line} bytes")
            return events
        start = 0
        while True:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            ends = [i for i in (cr, lf) if i != -1]
            if not ends:
                break
            end = min(ends)
            if self._skip_lf and end == start and buf[end : end + 1] == b"\n":
                # second half of a CRLF split across chunks
                self._skip_lf = False
                start = end + 1
                continue
            self._skip_lf = False
            line = buf[start:end]
            if buf[end : end + 1] == b"\r":
                if end + 1 < len(buf):
                    start = end + 2 if buf[end + 1 : end + 2] == b"\n" else end + 1
                else:
                    self._skip_lf = True
                    start = end + 1
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buf = buf[start:]
        if len(self._buf) > self._max_line:
            raise SSEError(f"SSE line longer than {self._max_line} bytes")
        return events

    def _line(self, raw: bytes) -> Event | None:
        if len(raw) > self._max_line:
            raise SSEError(f"SSE line longer than {self._max_line} bytes")
        if not raw:
            return self._dispatch()
        if raw.startswith(b":"):
            return None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SSEError(f"SSE line is not UTF-8: {exc}") from None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        self._touched = True
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "event":
            self._event = value
        elif name == "retry" and value.isascii() and value.isdigit() and len(value) <= 10:
            self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        if not self._touched:
            return None
        event = Event(
            data="\n".join(self._data) if self._has_data else None,
            id=self._id,
            event=self._event,
            retry=self._retry,
        )
        self._data = []
        self._has_data = False
        self._id = None
        self._event = None
        self._retry = None
        self._touched = False
        return event


def json_messages(parser: Parser, chunk: bytes) -> Iterator[dict[str, Any]]:
    """The JSON-RPC objects in the events `chunk` completes, for a relay that only watches a stream:
    malformed SSE or data that is not a JSON object is passed over (the client sees the stream as
    the upstream sent it; judging it is not the watcher's job)."""
    try:
        events = parser.feed(chunk)
    except SSEError:
        return
    for event in events:
        try:
            message = json.loads(event.data or "")
        except ValueError:
            continue
        if isinstance(message, dict):
            yield message
