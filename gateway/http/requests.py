"""The request object of the MCP endpoint: starlette's, with its headers decoded and indexed once.

starlette's `Headers.get` scans every header, lower-casing and encoding the name it looks for,
and `items()` decodes them all again; a JSON call looks up about ten headers and copies the rest
upstream once. Here each header is decoded once, and a lookup is a dict lookup.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers, State
from starlette.requests import Request, empty_receive, empty_send
from starlette.types import Receive, Scope, Send

_ABSENT: Any = object()


class IndexedHeaders(Headers):
    """`Headers` (an immutable, case-insensitive multidict) with decoded items and a name index."""

    def __init__(self, scope: Scope) -> None:
        # What `Headers(scope=scope)` sets, without its call: the scope's list (made a list if it is not).
        raw = scope["headers"]
        if type(raw) is not list:
            raw = scope["headers"] = list(raw)
        self._list = raw
        # ASGI header names are lower-case bytes; the first of a repeated name wins, as in `Headers`.
        self._items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self._list]
        self._index = dict(reversed(self._items))

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(self._items)

    def __getitem__(self, key: str) -> str:
        return self._index[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        value = self._index.get(key, _ABSENT)  # names are mostly asked for in lower case: no `lower()`
        return value if value is not _ABSENT else self._index.get(key.lower(), default)

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._index


class RequestState(State):
    """`request.state`, with the two attributes every MCP request sets and reads as slots: read
    without `State.__getattr__` (a Python call each, a dozen per request). Anything else set on
    it goes to the scope's state dict, as in `State`."""

    __slots__ = ("client_key", "principal")

    def __setattr__(self, key: Any, value: Any) -> None:
        if key in RequestState.__slots__:
            object.__setattr__(self, key, value)
        else:
            super().__setattr__(key, value)


class McpRequest(Request):
    """A starlette `Request` whose `headers` are `IndexedHeaders` and whose `state` is a
    `RequestState`, both made here (not on first access, behind an `AttributeError` each), and
    `method` without starlette's `typing.cast` call. `body`: the whole body, already read (kept
    where starlette's `body()` keeps what it read)."""

    # Plain attributes, not properties: these class attributes shadow starlette's properties, so
    # each read finds the instance's value without a Python call (about twenty reads per request).
    headers: Headers = None  # type: ignore[assignment]
    state: State = None  # type: ignore[assignment]
    method: str = ""

    def __init__(
        self, scope: Scope, receive: Receive = empty_receive, send: Send = empty_send, *, body: bytes | None = None
    ) -> None:
        # What starlette's `Request.__init__` and `HTTPConnection.__init__` set, without their two
        # calls (`tests/test_requests.py` checks it against the installed starlette's).
        self.scope = scope
        self._receive = receive
        self._send = send
        self._stream_consumed = False
        self._is_disconnected = False
        self._form = None
        self.headers = IndexedHeaders(scope)
        self.state = state = RequestState.__new__(RequestState)
        object.__setattr__(state, "_state", scope.setdefault("state", {}))  # what `State.__init__` sets
        self.method = scope["method"]
        if body is not None:
            self._body = body
