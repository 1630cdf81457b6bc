"""`subscriptions/listen` (2026-07-28 basic/patterns/subscriptions) served from a 2025 upstream session.

A 2025 server sends list changes and `resources/updated` on a session's standalone GET stream,
and only for that session: the notifications a client's own calls cause reach the session those
calls ran on. So a listen uses the held session of the same key (instance, principal, declared
capabilities): `resources/subscribe` for each URI of the filter, then the session's GET stream,
filtered by the client's `notifications` and tagged with the subscription id. A 2025 session has
one GET stream (the Python SDK answers a second one 409): one listen per held session at a time.
Closing the response ends the GET and unsubscribes the URIs.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.bridging.onto_2025.handshake import Handshake
from gateway.bridging.onto_2025.sessions import Held, HeldSessions
from gateway.supervisor import Supervisor
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.wire import protocol, sse

log = logging.getLogger("gateway.bridging.onto_2025.listen")

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
MAX_REOPENS = 5  # an upstream that ends the GET stream is asked for it again this often
# subscriptions §Notification Filter: filter field -> (the notification, the capability that announces it)
LIST_CHANGES: Mapping[str, tuple[str, str]] = {
    "toolsListChanged": ("notifications/tools/list_changed", "tools"),
    "promptsListChanged": ("notifications/prompts/list_changed", "prompts"),
    "resourcesListChanged": ("notifications/resources/list_changed", "resources"),
}
UPDATED = "notifications/resources/updated"


@dataclass(frozen=True)
class Filter:
    """What the client asked for and the gateway honours (subscriptions §Acknowledgment)."""

    lists: frozenset[str]  # notification methods
    uris: frozenset[str]
    acknowledged: Mapping[str, Any]


def honoured(asked: object, capabilities: Mapping[str, Any]) -> Filter:
    """The subset of the filter the upstream can serve: a list change it announces (`listChanged`),
    and resource updates (filtered by URI here, whatever the upstream sends)."""
    asked = asked if isinstance(asked, dict) else {}
    lists: set[str] = set()
    acknowledged: dict[str, Any] = {}
    for field, (method, capability) in LIST_CHANGES.items():
        announced = capabilities.get(capability)
        if asked.get(field) is True and isinstance(announced, dict) and announced.get("listChanged"):
            lists.add(method)
            acknowledged[field] = True
    uris = asked.get("resourceSubscriptions")
    kept = [u for u in uris if isinstance(u, str)] if isinstance(uris, list) else []
    if kept:
        acknowledged["resourceSubscriptions"] = kept
    return Filter(frozenset(lists), frozenset(kept), acknowledged)


def passes(message: Mapping[str, Any], wanted: Filter) -> bool:
    method = message.get("method")
    if method in wanted.lists:
        return True
    params = message.get("params")
    return method == UPDATED and isinstance(params, dict) and params.get("uri") in wanted.uris


def tagged(message: Mapping[str, Any], subscription: Any) -> bytes:
    """subscriptions §Receiving Notifications: every message carries the subscription id in `_meta`."""
    params = dict(message.get("params") or {})
    params["_meta"] = {**dict(params.get("_meta") or {}), SUBSCRIPTION_ID: subscription}
    return sse.encode(json.dumps({**message, "params": params}), event="message")


class Listener:
    def __init__(
        self,
        *,
        sessions: HeldSessions,
        handshake: Handshake,
        upstream: UpstreamClient,
        supervisor: Supervisor,
        keepalive: float,
        max_line: int,
    ) -> None:
        self._sessions = sessions
        self._handshake = handshake
        self._upstream = upstream
        self._supervisor = supervisor
        self._keepalive = keepalive
        self._max_line = max_line

    async def open(self, held: Held, subscription: Any, wanted: Filter) -> AsyncIterator[bytes]:
        """Subscribe, open the session's GET stream, and return the client's stream."""
        for uri in sorted(wanted.uris):
            await self._call(held, "resources/subscribe", {"uri": uri})
        response = await self._get(held, None)
        return self._stream(held, response, subscription, wanted)

    async def _get(self, held: Held, last_id: str | None) -> UpstreamResponse:
        headers = self._handshake.headers(held.pool, held.sid, held.version)
        headers["Accept"] = protocol.SSE
        if last_id is not None:
            headers[protocol.H_LAST_EVENT_ID] = last_id
        response = await self._upstream.send("GET", held.instance, headers, None, timeout=self._keepalive)
        if response.status == 409:
            response.close()
            raise errors.RequestInFlight("Conflict: another subscriptions/listen holds this upstream session's stream")
        if response.status != 200 or not response.is_sse:
            response.close()
            raise errors.UpstreamError(f"Bad upstream answer: HTTP {response.status} to the session's GET stream")
        return response

    async def _stream(
        self, held: Held, response: UpstreamResponse, subscription: Any, wanted: Filter
    ) -> AsyncIterator[bytes]:
        ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged"}
        yield tagged({**ack, "params": {"notifications": dict(wanted.acknowledged)}}, subscription)
        last_id: str | None = None
        try:
            for _ in range(MAX_REOPENS + 1):
                parser = sse.Parser(self._max_line)
                try:
                    while True:
                        try:
                            chunk = await response.next_chunk(self._keepalive)
                        except TimeoutError:
                            await self._sessions.touch(held)  # in use: not idle for the reaper
                            yield sse.KEEPALIVE
                            continue
                        if chunk is None:
                            break
                        for event in parser.feed(chunk):
                            last_id = event.id or last_id
                            message = _message(event)
                            if message is not None and passes(message, wanted):
                                yield tagged(message, subscription)
                finally:
                    response.close()
                response = await self._get(held, last_id)  # the upstream ended it: listen on
            done = {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: subscription}}
            # subscriptions §Graceful Closure: a response ends the subscription.
            yield sse.encode(json.dumps({"jsonrpc": "2.0", "id": subscription, "result": done}), event="message")
        except errors.UpstreamError as exc:
            yield sse.encode(json.dumps(exc.to_jsonrpc(subscription)), event="message")
        finally:
            if wanted.uris:
                self._supervisor.spawn(self._unsubscribe(held, wanted.uris), name="bridge-unsubscribe")

    async def _unsubscribe(self, held: Held, uris: frozenset[str]) -> None:
        for uri in sorted(uris):
            await self._call(held, "resources/unsubscribe", {"uri": uri})

    async def _call(self, held: Held, method: str, params: Mapping[str, Any]) -> None:
        """A request whose answer does not matter (an upstream without subscriptions refuses it)."""
        request_id = f"mcpgw-{secrets.token_hex(8)}"
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params)})
        headers = self._handshake.headers(held.pool, held.sid, held.version)
        try:
            await (await self._upstream.send("POST", held.instance, headers, body.encode())).read(1 << 20)
        except errors.UpstreamError as exc:
            log.warning("%s upstream failed: %s", method, exc)


def _message(event: sse.Event) -> dict[str, Any] | None:
    if not event.data:
        return None
    try:
        message = json.loads(event.data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
