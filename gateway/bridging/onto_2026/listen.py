"""The 2025 standalone GET stream, served from an upstream `subscriptions/listen` stream
(2026-07-28 basic/patterns/subscriptions: it replaces both the GET endpoint and `resources/subscribe`).

The session's subscribed URIs live in Redis (`resources/subscribe` and `unsubscribe`, answered by the
gateway on any replica). The replica pumping the GET stream looks at them every `check` seconds and,
when they changed, listens again with the new filter; the client's stream goes on. The stream ends
when the upstream ends its listen stream or the session is gone (DELETE); the client may GET again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.bridging.onto_2026 import translate
from gateway.bridging.onto_2026.calls import Caller
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.upstream.client import UpstreamResponse
from gateway.wire import sse

log = logging.getLogger(__name__)

LISTEN = "subscriptions/listen"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
LISTEN_ID = "mcpgw-listen"
# What a 2025 client's standalone stream may carry: every change notification the server offers.
LIST_CHANGES = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}
ACK_TIMEOUT = 30.0  # s an upstream has to acknowledge a listen request
# 2026-07-28 changelog: resources/subscribe is replaced by subscriptions/listen; ping and
# logging/setLevel are removed (the level rides each request's `_meta`): the gateway answers them.
LOCAL_METHODS = frozenset({"resources/subscribe", "resources/unsubscribe", "ping", "logging/setLevel"})


def listen_filter(uris: frozenset[str]) -> dict[str, Any]:
    """subscriptions §Notification Filter for a 2025 client's standalone stream."""
    notifications: dict[str, Any] = dict(LIST_CHANGES)
    if uris:
        notifications["resourceSubscriptions"] = sorted(uris)
    return notifications


def as_2025(data: str) -> str | None:
    """A listen-stream event for a 2025 client: None for the acknowledgment and the listen's own
    closing answer (no 2025 counterpart); notifications lose the subscription id in `_meta`."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("method") in (None, ACKNOWLEDGED):
        return None
    params = message.get("params")
    if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
        meta = {k: v for k, v in params["_meta"].items() if k != SUBSCRIPTION_ID}
        params = {**params, "_meta": meta} if meta else {k: v for k, v in params.items() if k != "_meta"}
        message = {**message, "params": params}
    return json.dumps(message)


class Subscriptions:
    """A bridged session's subscribed resource URIs and log level, in Redis (any replica answers
    the requests that set them)."""

    def __init__(self, redis: Redis, keys: Keys, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = int(ttl * 1000)

    async def answer(self, session: str, message: Mapping[str, Any]) -> dict[str, Any] | None:
        """The gateway's own answer to resources/subscribe or unsubscribe; None for other methods."""
        method = message.get("method")
        if method not in LOCAL_METHODS:
            return None
        done: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id"), "result": {}}
        if method == "ping":
            return done  # 2025 basic/utilities/ping: an empty result, promptly
        params = message.get("params")
        field = "level" if method == "logging/setLevel" else "uri"
        value = params.get(field) if isinstance(params, dict) else None
        if not isinstance(value, str):
            error = {"code": errors.INVALID_PARAMS, "message": f"Invalid params: {field} must be a string"}
            return {"jsonrpc": "2.0", "id": message.get("id"), "error": error}
        key = self._keys.bridge_log_level(session) if field == "level" else self._keys.bridge_subscriptions(session)
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                if method == "resources/subscribe":
                    pipe.sadd(key, value)
                elif method == "resources/unsubscribe":
                    pipe.srem(key, value)
                else:
                    pipe.set(key, value)
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()
        return done

    async def log_level(self, session: str) -> str | None:
        """The level the client set with logging/setLevel (None: never set)."""
        with translated():
            raw = await self._redis.get(self._keys.bridge_log_level(session))
        return raw.decode() if isinstance(raw, bytes) else None

    async def uris(self, session: str) -> frozenset[str] | None:
        """The subscribed URIs; None when the session is gone."""
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(self._keys.session(session))
                pipe.smembers(self._keys.bridge_subscriptions(session))
                exists, members = await pipe.execute()
        return frozenset(m.decode() for m in members) if exists else None


@dataclass
class Listen:
    """One open upstream listen stream and its parser."""

    response: UpstreamResponse
    parser: sse.Parser
    acknowledged: bool = False

    def events(self, chunk: bytes) -> list[bytes]:
        """The events of `chunk` for the client (those before the acknowledgment are dropped)."""
        out: list[bytes] = []
        for event in self.parser.feed(chunk):
            if not event.data:
                continue
            if not self.acknowledged:
                self.acknowledged = ACKNOWLEDGED in event.data
                continue
            data = as_2025(event.data)
            if data is not None:
                out.append(sse.encode(data))
        return out


async def _open(
    caller: Caller, uris: frozenset[str], call: Mapping[str, Any], max_line: int
) -> tuple[Listen, list[bytes]] | None:
    """A listen stream with `uris` in its filter once acknowledged (subscriptions §Acknowledgment:
    the server delivers nothing before it, and everything matching after it), with the events that
    came behind the acknowledgment."""
    asked = {"jsonrpc": "2.0", "id": LISTEN_ID, "method": LISTEN, "params": {"notifications": listen_filter(uris)}}
    init = call["init"]
    sent = translate.upstream_message(asked, init, LISTEN_ID)
    reply = await caller.send(call["pool"], call["instance"], call["headers"], sent, init)
    if reply.stream is None:
        log.info("bridged listen refused by the upstream: %s", (reply.message or {}).get("error"))
        return None
    opened = Listen(reply.stream, sse.Parser(max_line))
    while (chunk := await reply.stream.next_chunk(ACK_TIMEOUT)) is not None:
        behind = opened.events(chunk)
        if opened.acknowledged:
            return opened, behind
    reply.stream.close()
    return None


@dataclass(frozen=True)
class Opened:
    """An acknowledged listen stream: its filter's URIs, the stream, the events behind the ack."""

    uris: frozenset[str]
    listen: Listen
    behind: list[bytes]


async def open_listen(
    caller: Caller, subscriptions: Subscriptions, session: str, call: Mapping[str, Any], max_line: int
) -> Opened | None:
    """The session's first listen stream, acknowledged (so a notification sent once the client has
    its stream's headers reaches it); None when the session is gone or the upstream refused."""
    uris = await subscriptions.uris(session)
    opened = await _open(caller, uris, call, max_line) if uris is not None else None
    return Opened(uris, *opened) if uris is not None and opened is not None else None


async def listen(
    caller: Caller,
    subscriptions: Subscriptions,
    first: Opened,
    *,
    session: str,
    call: Mapping[str, Any],
    check: float,
    max_line: int,
    holder: list[UpstreamResponse],
) -> AsyncIterator[bytes]:
    """The events of a bridged standalone stream, from its `first` listen stream on. `call`: pool,
    instance, headers, init (the client's initialize params); `holder` keeps the open upstream
    response (closed with the stream).

    A changed filter opens the new listen stream before the old one closes (make before break), so
    no notification falls between them; one may come twice (they are idempotent signals)."""
    uris, current, behind = first.uris, first.listen, first.behind
    holder[:] = [current.response]
    try:
        for event in behind:
            yield event
        looked = time.monotonic()
        while True:
            try:
                chunk = await current.response.next_chunk(max(looked + check - time.monotonic(), 0.0))
            except TimeoutError:
                chunk = b""
            except errors.UpstreamError:
                return
            if chunk is None:
                return  # the upstream ended the subscription: the client may GET again
            for event in current.events(chunk):
                yield event
            if time.monotonic() - looked < check:
                continue
            looked = time.monotonic()
            now = await subscriptions.uris(session)
            if now is None:
                return  # the session was deleted
            if now == uris:
                continue
            uris = now
            opened = await _open(caller, uris, call, max_line)
            for event in current.events(current.response.take_buffered()):
                yield event
            current.response.close()
            if opened is None:
                return
            current, behind = opened
            holder[:] = [current.response]
            for event in behind:
                yield event
    finally:
        for response in holder:
            response.close()
        holder.clear()
