"""What a virtual server does with a request: merge the lists, route a call to its member.

Era-free: a member is asked through an `Ask` (a sessionful member's upstream session, or any
instance of its pool for a 2026-07-28 request); the endpoints turn the outcome into a response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.virtual.merging import ListKind, decode_cursor, merge_page, template_matches
from gateway.virtual.naming import VirtualServer

log = logging.getLogger("gateway.virtual.calls")

NAMED = {"tools/call": "name", "prompts/get": "name"}  # prefixed names: the prefix names the member
BY_URI = ("resources/read", "resources/subscribe", "resources/unsubscribe")
BROADCAST = ("logging/setLevel",)  # every member gets it; the client gets one empty result
RESOURCES = ("resources/list", "resources", "uri")  # a list method, its items' key, the field naming one
TEMPLATES = ("resources/templates/list", "resourceTemplates", "uriTemplate")
MAX_OWNER_PAGES = 20  # resources/list pages read per member when looking for a URI's owner
_MAX_CONFLICTS_LOGGED = 10_000

# (member pool, method, params) -> the member's result; None when it is down or answered an error
Ask = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class Routed:
    """A request for one member: its own name in the params (the prefix removed)."""

    pool: str
    message: dict[str, Any]
    name: str | None = None  # the member's own name or URI (the `Mcp-Name` it gets), if any


class Calls:
    def __init__(self) -> None:
        self._conflicts: set[tuple[str, str]] = set()  # (server, uri) already logged

    async def merged_list(
        self, server: VirtualServer, ask: Ask, kind: ListKind, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        cursors = decode_cursor(params.get("cursor"), server.members)
        asked = list(cursors)

        async def page(pool: str) -> dict[str, Any] | None:
            own = {k: v for k, v in params.items() if k != "cursor"}
            if cursors[pool] is not None:
                own["cursor"] = cursors[pool]
            return await ask(pool, kind.method, own)

        results = await asyncio.gather(*(page(pool) for pool in asked))
        merged = merge_page(server, kind, {p: r for p, r in zip(asked, results, strict=True) if r is not None})
        for uri, kept, dropped in merged.conflicts:
            if (server.name, uri) not in self._conflicts and len(self._conflicts) < _MAX_CONFLICTS_LOGGED:
                self._conflicts.add((server.name, uri))
                log.warning(
                    "virtual server %s: %s listed by %s and %s; %s serves it", server.name, uri, kept, dropped, kept
                )
        return merged.result

    async def route(self, server: VirtualServer, ask: Ask, message: Mapping[str, Any]) -> Routed:
        """The member a call, a prompt or a resource request goes to, and the message it gets."""
        method = str(message.get("method"))
        raw_params = message.get("params")
        params: dict[str, Any] = dict(raw_params) if isinstance(raw_params, dict) else {}
        name: str | None = None
        if method in NAMED:
            split = server.split(str(params.get(NAMED[method], "")))
            if split is None:
                what = "tool" if method == "tools/call" else "prompt"
                raise errors.InvalidParams(f"Unknown {what}: {params.get(NAMED[method])!r}")
            pool, name = split
            params[NAMED[method]] = name
        elif method in BY_URI:
            name = str(params.get("uri", ""))
            pool = await self._owner(server, ask, name, *RESOURCES)
        elif method == "completion/complete":
            ref = params.get("ref")
            ref = dict(ref) if isinstance(ref, dict) else {}
            if ref.get("type") == "ref/prompt":
                split = server.split(str(ref.get("name", "")))
                if split is None:
                    raise errors.InvalidParams(f"Unknown prompt: {ref.get('name')!r}")
                pool, ref["name"] = split
            else:
                uri = str(ref.get("uri", ""))
                pool = await self._owner(
                    server, ask, uri, "resources/templates/list", "resourceTemplates", "uriTemplate"
                )
            params["ref"] = ref
        else:
            raise errors.MethodNotFound(f"Method not found: {method}")
        return Routed(pool, {**message, "params": params}, name)

    async def _owner(self, server: VirtualServer, ask: Ask, uri: str, method: str, key: str, field: str) -> str:
        """The first member (in configuration order) that lists `uri`; for a URI no one lists, the
        first whose resource templates could expand to it."""
        for pool in server.members:
            if any(item.get(field) == uri for item in await self._every(ask, pool, method, key)):
                return pool
        if method == "resources/list":
            for pool in server.members:
                templates = await self._every(ask, pool, "resources/templates/list", "resourceTemplates")
                if any(template_matches(str(t.get("uriTemplate", "")), uri) for t in templates):
                    return pool
        raise errors.InvalidParams(f"Unknown resource: {uri!r}")

    async def _every(self, ask: Ask, pool: str, method: str, key: str) -> list[dict[str, Any]]:
        """Every item of a member's list (up to MAX_OWNER_PAGES pages); none when it is down."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_OWNER_PAGES):
            result = await ask(pool, method, {} if cursor is None else {"cursor": cursor})
            if result is None:
                break
            items.extend(i for i in result.get(key) or () if isinstance(i, dict))
            following = result.get("nextCursor")
            if not isinstance(following, str):
                break
            cursor = following
        return items

    async def broadcast(self, server: VirtualServer, ask: Ask, message: Mapping[str, Any]) -> None:
        """A request every member gets (its answer is the gateway's): down members are left out."""
        params = message.get("params")
        own = dict(params) if isinstance(params, dict) else {}
        await asyncio.gather(*(ask(pool, str(message.get("method")), own) for pool in server.members))
