"""What a virtual session does with a request: merge the lists, route a call to its member.

Given a loaded `VirtualSession`, the client's forwarded headers and the JSON-RPC message; the HTTP
side (`endpoint.py`) turns the outcome into a response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.virtual.members import Members, MemberUnavailable
from gateway.virtual.merging import ListKind, decode_cursor, merge_page, template_matches
from gateway.virtual.naming import VirtualServer
from gateway.virtual.record import Member, VirtualSession

log = logging.getLogger("gateway.virtual.calls")

NAMED = {"tools/call": "name", "prompts/get": "name"}  # prefixed names: the prefix names the member
BY_URI = ("resources/read", "resources/subscribe", "resources/unsubscribe")
BROADCAST = ("logging/setLevel",)  # every member gets it; the client gets one empty result
MAX_OWNER_PAGES = 20  # resources/list pages read per member when looking for a URI's owner
_MAX_CONFLICTS_LOGGED = 10_000


@dataclass(frozen=True)
class Routed:
    """A request for one member: its own name in the params (the prefix removed)."""

    member: Member
    message: dict[str, Any]


class Calls:
    def __init__(self, members: Members) -> None:
        self._members = members
        self._conflicts: set[tuple[str, str]] = set()  # (server, uri) already logged

    async def _ask(
        self, vs: VirtualSession, pool: str, headers: Mapping[str, str], method: str, params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A member's result, or None when it is down or answers an error (it leaves the merge)."""
        message = {"jsonrpc": "2.0", "id": f"mcpgw-v-{pool}", "method": method, "params": params}
        try:
            member, answer = await self._members.ask(vs.record, vs.members[pool], headers, message)
        except (MemberUnavailable, errors.UpstreamError) as exc:
            log.info("virtual session %s: member %s left out of %s: %s", vs.record.id[:8], pool, method, exc.message)
            return None
        vs.members[pool] = member
        result = answer.get("result")
        return result if isinstance(result, dict) else None

    async def merged_list(
        self,
        server: VirtualServer,
        vs: VirtualSession,
        kind: ListKind,
        params: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> dict[str, Any]:
        cursors = decode_cursor(params.get("cursor"), server.members)
        asked = [pool for pool in cursors if pool in vs.members]

        async def page(pool: str) -> dict[str, Any] | None:
            own = {k: v for k, v in params.items() if k != "cursor"}
            if cursors[pool] is not None:
                own["cursor"] = cursors[pool]
            return await self._ask(vs, pool, headers, kind.method, own)

        results = await asyncio.gather(*(page(pool) for pool in asked))
        merged = merge_page(server, kind, {p: r for p, r in zip(asked, results, strict=True) if r is not None})
        for uri, kept, dropped in merged.conflicts:
            if (server.name, uri) not in self._conflicts and len(self._conflicts) < _MAX_CONFLICTS_LOGGED:
                self._conflicts.add((server.name, uri))
                log.warning(
                    "virtual server %s: %s listed by %s and %s; %s serves it", server.name, uri, kept, dropped, kept
                )
        return merged.result

    async def route(
        self, server: VirtualServer, vs: VirtualSession, message: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Routed:
        """The member a call, a prompt or a resource request goes to, and the message it gets."""
        method = str(message.get("method"))
        raw_params = message.get("params")
        params: dict[str, Any] = dict(raw_params) if isinstance(raw_params, dict) else {}
        if method in NAMED:
            split = server.split(str(params.get(NAMED[method], "")))
            if split is None or split[0] not in vs.members:
                what = "tool" if method == "tools/call" else "prompt"
                raise errors.InvalidParams(f"Unknown {what}: {params.get(NAMED[method])!r}")
            pool, own = split
            params[NAMED[method]] = own
        elif method in BY_URI:
            pool = await self._owner(vs, str(params.get("uri", "")), headers, "resources/list", "resources", "uri")
        elif method == "completion/complete":
            ref = params.get("ref")
            ref = dict(ref) if isinstance(ref, dict) else {}
            if ref.get("type") == "ref/prompt":
                split = server.split(str(ref.get("name", "")))
                if split is None or split[0] not in vs.members:
                    raise errors.InvalidParams(f"Unknown prompt: {ref.get('name')!r}")
                pool, ref["name"] = split
            else:
                uri = str(ref.get("uri", ""))
                pool = await self._owner(
                    vs, uri, headers, "resources/templates/list", "resourceTemplates", "uriTemplate"
                )
            params["ref"] = ref
        else:
            raise errors.MethodNotFound(f"Method not found: {method}")
        return Routed(vs.members[pool], {**message, "params": params})

    async def _owner(
        self, vs: VirtualSession, uri: str, headers: Mapping[str, str], method: str, key: str, field: str
    ) -> str:
        """The first member (in configuration order) that lists `uri`; for a URI no one lists, the
        first whose resource templates could expand to it."""
        for pool in vs.members:
            if any(item.get(field) == uri for item in await self._every(vs, pool, headers, method, key)):
                return pool
        if method == "resources/list":
            for pool in vs.members:
                templates = await self._every(vs, pool, headers, "resources/templates/list", "resourceTemplates")
                if any(template_matches(str(t.get("uriTemplate", "")), uri) for t in templates):
                    return pool
        raise errors.InvalidParams(f"Unknown resource: {uri!r}")

    async def _every(
        self, vs: VirtualSession, pool: str, headers: Mapping[str, str], method: str, key: str
    ) -> list[dict[str, Any]]:
        """Every item of a member's list (up to MAX_OWNER_PAGES pages); none when it is down."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_OWNER_PAGES):
            result = await self._ask(vs, pool, headers, method, {} if cursor is None else {"cursor": cursor})
            if result is None:
                break
            items.extend(i for i in result.get(key) or () if isinstance(i, dict))
            following = result.get("nextCursor")
            if not isinstance(following, str):
                break
            cursor = following
        return items

    async def broadcast(self, vs: VirtualSession, message: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        """A request every member gets (its answer is the gateway's): down members are left out."""
        params = message.get("params")
        own = dict(params) if isinstance(params, dict) else {}
        await asyncio.gather(*(self._ask(vs, pool, headers, str(message.get("method")), own) for pool in vs.members))
