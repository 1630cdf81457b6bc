"""A 2025 client's `initialize`, answered from the upstream's `server/discover` (2026-07-28
server/discover), on a healthy instance of the pool: the one the session's requests then go to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import errors
from gateway.bridging.onto_2026 import translate
from gateway.bridging.onto_2026.calls import Caller
from gateway.upstream.pools import Pools


async def discover(
    caller: Caller, pools: Pools, pool: str, headers: Mapping[str, str], params: Mapping[str, Any], request_id: Any
) -> tuple[str, dict[str, Any]]:
    """The instance that answered and its answer. Discovery changes nothing upstream, so an
    unreachable instance is skipped for the next healthy one (503 when none is left)."""
    asked = translate.upstream_message(
        {"jsonrpc": "2.0", "id": request_id, "method": "server/discover"}, params, request_id
    )
    tried: set[str] = set()
    while True:
        instance = pools.pick(pool, avoid=frozenset(tried))
        try:
            reply = await caller.send(pool, instance, headers, asked, params)
            break
        except errors.UpstreamUnavailable:
            pools.report_failure(instance)
            tried.add(instance)
    if reply.stream is not None:
        reply.stream.close()
        raise errors.UpstreamError("Bad upstream answer: server/discover answered as a stream")
    return instance, reply.message or {}
