"""The request object of the MCP endpoint: starlette's, with its headers decoded and indexed once.

starlette's `Headers.get` scans every header, lower-casing and encoding the name it looks for,
and `items()` decodes them all again; a JSON call looks up about ten headers and copies the rest
upstream once. Here each header is decoded once, and a lookup is a dict lookup.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers, State
from starlette.requests import Request
from starlette.types import Scope


class IndexedHeaders(Headers):
    """`Headers` (an immutable, case-insensitive multidict) with decoded items and a name index."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        # ASGI header names are lower-case bytes; the first of a repeated name wins, as in `Headers`.
        self._items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self._list]
        self._index = dict(reversed(self._items))

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(self._items)

    def __getitem__(self, key: str) -> str:
        return self._index[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._index.get(key.lower(), default)

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower() in self._index


class McpRequest(Request):
    """A starlette `Request` whose `headers` are `IndexedHeaders`; `state` and `method` without
    starlette's per-access `hasattr` and `typing.cast` calls (a call reads them a dozen times)."""

    @property
    def state(self) -> State:
        try:
            return self._state
        except AttributeError:
            self._state: State = State(self.scope.setdefault("state", {}))
            return self._state

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    @property
    def headers(self) -> Headers:
        try:
            return self._headers
        except AttributeError:
            self._headers: Headers = IndexedHeaders(self.scope)
            return self._headers
