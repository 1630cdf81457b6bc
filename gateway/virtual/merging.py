"""Merging the members' answers into one: capabilities, the initialize result, lists and their cursor.

Pure functions over JSON values. A merged list's page holds one page of every member still to be
read; the opaque cursor remembers each such member's own cursor (base64url of a JSON object).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.virtual.naming import VirtualServer


@dataclass(frozen=True)
class ListKind:
    """One list method: where its items are in the result, which field names an item, and whether
    that name is prefixed with the member's pool (tools, prompts) or kept (resource URIs)."""

    method: str
    key: str
    field: str
    prefixed: bool


LISTS: Mapping[str, ListKind] = {
    k.method: k
    for k in (
        ListKind("tools/list", "tools", "name", True),
        ListKind("prompts/list", "prompts", "name", True),
        ListKind("resources/list", "resources", "uri", False),
        ListKind("resources/templates/list", "resourceTemplates", "uriTemplate", False),
    )
}


def encode_cursor(cursors: Mapping[str, str | None]) -> str | None:
    """The merged cursor of the members that have more pages (None when none has)."""
    if not cursors:
        return None
    return base64.urlsafe_b64encode(json.dumps(dict(cursors), separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: object, members: Sequence[str]) -> dict[str, str | None]:
    """Each member still to read and its own cursor (None: its first page); no cursor: every member."""
    if cursor is None:
        return {pool: None for pool in members}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        # server/utilities/pagination §Error Handling: an invalid cursor is -32602 Invalid params.
        raise errors.InvalidParams("Invalid params: unknown cursor") from None
    if not isinstance(decoded, dict) or not all(
        pool in members and (c is None or isinstance(c, str)) for pool, c in decoded.items()
    ):
        raise errors.InvalidParams("Invalid params: unknown cursor")
    return {pool: decoded[pool] for pool in members if pool in decoded}


@dataclass
class MergedPage:
    """The merged result, and the URIs a later member also listed (the first member keeps them)."""

    result: dict[str, Any]
    conflicts: list[tuple[str, str, str]]  # (uri, kept member, dropped member)


def merge_page(server: VirtualServer, kind: ListKind, pages: Mapping[str, Mapping[str, Any]]) -> MergedPage:
    """`pages`: each member's result for this page, in member order (a member that failed is absent)."""
    items: list[Any] = []
    owners: dict[str, str] = {}
    conflicts: list[tuple[str, str, str]] = []
    more: dict[str, str | None] = {}
    for pool in server.members:
        page = pages.get(pool)
        if page is None:
            continue
        for item in page.get(kind.key) or ():
            if not isinstance(item, dict) or not isinstance(item.get(kind.field), str):
                continue
            value = item[kind.field]
            if kind.prefixed:
                items.append({**item, kind.field: server.prefixed(pool, value)})
            elif value in owners:
                conflicts.append((value, owners[value], pool))
            else:
                owners[value] = pool
                items.append(item)
        following = page.get("nextCursor")
        if isinstance(following, str):
            more[pool] = following
    result: dict[str, Any] = {kind.key: items}
    answered = [pages[p] for p in server.members if p in pages]
    if any("resultType" in page for page in answered):
        result.update(freshness(answered))
    cursor = encode_cursor(more)
    if cursor is not None:
        result["nextCursor"] = cursor
    return MergedPage(result, conflicts)


def freshness(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """2026-07-28 results (caching §Cacheable Results): the merge is as fresh as its stalest part
    (the least ttlMs, 0 where a member gave none) and private if any part is (or does not say)."""
    ttls = [r.get("ttlMs") for r in results]
    ttl = min((t if isinstance(t, int) and not isinstance(t, bool) else 0 for t in ttls), default=0)
    public = bool(results) and all(r.get("cacheScope") == "public" for r in results)
    return {"resultType": "complete", "ttlMs": max(ttl, 0), "cacheScope": "public" if public else "private"}


def merge_capabilities(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The union: a capability any member has; a flag (`listChanged`, `subscribe`) true if any member's is."""
    merged: dict[str, Any] = {}
    for capabilities in members:
        for name, value in capabilities.items():
            if isinstance(value, dict):
                into = merged.setdefault(name, {})
                if isinstance(into, dict):
                    for flag, on in value.items():
                        into[flag] = bool(into.get(flag)) or on if isinstance(on, bool) else into.get(flag, on)
            else:
                merged.setdefault(name, value)
    return merged


def initialize_result(
    server: VirtualServer, version: str, results: Mapping[str, Mapping[str, Any]], gateway_version: str
) -> dict[str, Any]:
    """The InitializeResult the client sees: the members' union, named after the virtual server."""
    capabilities = merge_capabilities([r.get("capabilities") or {} for r in results.values()])
    # The gateway announces members going and coming back itself (`listening.py`), so it declares
    # the notification (server/tools §Capabilities: listChanged says list_changed is sent).
    tools = capabilities.setdefault("tools", {})
    if isinstance(tools, dict):
        tools["listChanged"] = True
    result: dict[str, Any] = {
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": {"name": server.name, "version": gateway_version},
    }
    instructions = merge_instructions(server, results)
    if instructions is not None:
        result["instructions"] = instructions
    return result


def merge_instructions(server: VirtualServer, results: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The members' instructions, each under its pool's name (None when no member gave any)."""
    notes = [
        f"## {pool}\n{results[pool]['instructions']}"
        for pool in server.members
        if pool in results and isinstance(results[pool].get("instructions"), str)
    ]
    return "\n\n".join(notes) if notes else None


_EXPRESSION = re.compile(r"\{([^}]*)\}")


def template_matches(template: str, uri: str) -> bool:
    """Whether `uri` could be an expansion of the RFC 6570 `template` (each expression matches any
    text without `/`, `?` or `#`; a reserved `{+x}` / `{#x}` one matches anything)."""
    parts: list[str] = []
    last = 0
    for match in _EXPRESSION.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(".*" if match.group(1)[:1] in ("+", "#") else "[^/?#]*")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.fullmatch("".join(parts), uri) is not None
