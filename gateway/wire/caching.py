"""Pure rules of the shared response cache (2026-07-28 server/utilities/caching, SEP-2549).

Which requests may be answered from the cache, what identifies an answer (the cache key), which
answers may be kept and for how long, and which upstream notification drops which entries. No IO:
plain values in, plain values out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

# caching §Cacheable Results: results of these methods carry ttlMs/cacheScope.
CACHEABLE_METHODS = frozenset(
    {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)
# Entries of one family share a generation: a notification bumps it, and every older entry is stale.
FAMILY_OF: Mapping[str, str] = {
    "server/discover": "discover",
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resources",
}
# SEP-2549 §Motivation (method -> notification table); caching §Interaction with Notifications.
LIST_CHANGED: Mapping[str, str] = {
    "notifications/tools/list_changed": "tools",
    "notifications/prompts/list_changed": "prompts",
    "notifications/resources/list_changed": "resources",
}
RESOURCE_UPDATED = "notifications/resources/updated"  # drops the reads of its `uri`
# basic/patterns/subscriptions §Acknowledgment: the first message of a listen stream.
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
# caching §Cache Key: results of MRTR retries depend on inputs outside the key; never cached.
MRTR_PARAMS = ("inputResponses", "requestState")
# `_meta` entries that describe the caller or the call, not the question: left out of the key.
# Everything else in `_meta` (protocol version, client capabilities, unknown keys) is part of it.
META_NOT_IN_KEY = frozenset(
    {"progressToken", "io.modelcontextprotocol/clientInfo", "traceparent", "tracestate", "baggage"}
)
MAX_TTL_MS = 24 * 60 * 60 * 1000  # longer ttlMs values are clamped down (as the Python SDK's client does)

Scope = Literal["public", "private"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Question:
    """A cacheable request: the family its entries live in and the digest of what it asks."""

    method: str
    family: str
    digest: str
    uri: str | None = None  # resources/read: the resource (its `resources/updated` drops the entry)


def family_of_read(uri: str) -> str:
    """The family of the reads of one resource (its own generation and hash slot)."""
    return f"read:{_digest(uri)}"


def question(method: str | None, params: Mapping[str, Any]) -> Question | None:
    """The cache identity of a request, or None when its answer must not come from a cache."""
    if method not in CACHEABLE_METHODS or any(name in params for name in MRTR_PARAMS):
        return None
    if method == "resources/read":
        uri = params.get("uri")
        if not isinstance(uri, str):
            return None
        family = family_of_read(uri)
    else:
        family = FAMILY_OF[method]
    # caching §Cache Key: the method together with the parameters that affect the result.
    keyed: dict[str, Any] = {k: v for k, v in params.items() if k != "_meta"}
    meta = params.get("_meta")
    if isinstance(meta, dict):
        keyed["_meta"] = {k: v for k, v in meta.items() if k not in META_NOT_IN_KEY}
    try:
        canonical = json.dumps([method, keyed], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    return Question(method, family, _digest(canonical), params.get("uri") if method == "resources/read" else None)


@dataclass(frozen=True)
class Hint:
    """What an answer says about its own caching: fresh for `ttl_ms`, shared by `scope`."""

    ttl_ms: int
    scope: Scope


def hint_of(answer: Mapping[str, Any], request_id: Any) -> Hint | None:
    """The caching hint of a successful, complete answer to `request_id`; None: do not keep it."""
    result = answer.get("result")
    if answer.get("id") != request_id or "error" in answer or not isinstance(result, dict):
        return None
    # caching §Cacheable Results: interim input_required results are not cacheable.
    if result.get("resultType", "complete") != "complete":
        return None
    ttl = result.get("ttlMs")
    # caching §Time-to-Live: absent, zero or negative means immediately stale.
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        return None
    # caching §Cache Scope: only "public" may be shared; anything else is kept as private.
    scope: Scope = "public" if result.get("cacheScope") == "public" else "private"
    return Hint(min(ttl, MAX_TTL_MS), scope)


def served(result: Mapping[str, Any], remaining_ms: int) -> dict[str, Any]:
    """A cached result as sent again: fresh only for what is left of the upstream's ttlMs
    (caching §Freshness Calculation counts from the upstream's answer, not from this one)."""
    return {**result, "ttlMs": remaining_ms}


def invalidated(message: Mapping[str, Any]) -> tuple[str, ...]:
    """The families an upstream notification makes stale (none for other messages)."""
    method = message.get("method")
    if not isinstance(method, str) or "id" in message:
        return ()
    if method in LIST_CHANGED:
        return (LIST_CHANGED[method],)
    params = message.get("params")
    if method == RESOURCE_UPDATED and isinstance(params, dict) and isinstance(params.get("uri"), str):
        return (family_of_read(params["uri"]),)
    return ()


@dataclass(frozen=True)
class Directives:
    """What a client's `Cache-Control` asks of the shared cache (RFC 9111 §5.2.1)."""

    use_stored: bool = True  # no-cache / max-age=0: go to the upstream (and keep its fresh answer)
    may_store: bool = True  # no-store: keep nothing of this exchange


def directives(cache_control: str | None) -> Directives:
    """The request directives the cache honours; everything else in the header is ignored."""
    if not cache_control:
        return Directives()
    tokens = {part.strip().lower().replace(" ", "") for part in cache_control.split(",")}
    # RFC 9111 §5.2.1.4 no-cache, §5.2.1.1 max-age=0: a stored answer must not be used as it is.
    refresh = bool(tokens & {"no-cache", "max-age=0"})
    return Directives(use_stored=not refresh, may_store="no-store" not in tokens)  # §5.2.1.5 no-store


def partition_of(principal: str, credentials: Mapping[str, str]) -> str | None:
    """Who a private answer belongs to: the authenticated principal, else a digest of the
    credentials the upstream sees (only their holder can present them); None: nobody known, so
    private answers are neither kept nor served."""
    if principal:
        return "p:" + _digest(principal)
    material = [f"{name.lower()}={value}" for name, value in sorted(credentials.items()) if value]
    return "c:" + _digest("\n".join(material)) if material else None
