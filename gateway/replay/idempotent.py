"""`Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header) for POSTs in every era.

A POST carrying the header runs at most once per (client, key) within `--idempotency-ttl`: the
client is the authenticated principal, or the client IP when auth is off. A repeat while the
first is in flight gets 409 (it is not attached: in the stateless era a response stream belongs
to its one connection); a repeat after it gets the stored response (status, body or the SSE
events as sent); the same key with another body gets 422. Errors carry a JSON-RPC error body
like every other refusal. Without the header nothing is stored (the stateless era writes nothing
to Redis then).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.responses import SSE_HEADERS
from gateway.store.idempotency import (
    DONE,
    DROPPED,
    INTERRUPTED,
    RUNNING,
    IdempotencyRecord,
    IdempotencyStore,
    Outcome,
    record_digest,
)
from gateway.wire import protocol

H_IDEMPOTENCY_KEY = "idempotency-key"
MAX_KEY_LENGTH = 255

# What a repeat gets for each state of the first request's record (DONE: its stored response).
REFUSALS: dict[str, tuple[type[errors.GatewayError], str]] = {
    # draft §2.7: a request still being processed -> 409 Conflict
    RUNNING: (errors.RequestInFlight, "Conflict: a request with this Idempotency-Key is still in flight"),
    INTERRUPTED: (errors.RequestIdReused, "Conflict: the request with this Idempotency-Key was cancelled midway"),
    DROPPED: (errors.RequestIdReused, "Conflict: the response to this Idempotency-Key was too large to keep"),
}


def parse_key(value: str) -> str:
    """draft §2.1: the value is an RFC 8941 sf-string; a bare token is accepted too."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not text or len(text) > MAX_KEY_LENGTH or not all(0x20 <= ord(c) <= 0x7E for c in text):
        raise errors.InvalidRequest(f"Bad Request: Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters")
    return text


@dataclass(frozen=True)
class Ticket:
    """This request created the record: it runs, and stores its outcome there."""

    digest: str


class Idempotency:
    def __init__(self, store: IdempotencyStore, *, max_response: int) -> None:
        self._store = store
        self.max_response = max_response

    async def open(self, request: Request, raw: bytes) -> Ticket | IdempotencyRecord | None:
        """None without the header; a Ticket for a first request; the stored record for a repeat."""
        value = request.headers.get(H_IDEMPOTENCY_KEY)
        if value is None:
            return None
        digest = record_digest(request.state.client_key, parse_key(value))
        # draft §2.4: the fingerprint tells a repeat from a different request under the same key.
        fingerprint = hashlib.sha256(raw).hexdigest()
        existing = await self._store.begin(digest, fingerprint)
        if existing is None:
            return Ticket(digest)
        if existing.fingerprint != fingerprint:
            # draft §2.7: the key was used for another payload -> 422 Unprocessable Content
            raise errors.IdempotencyKeyReused("Unprocessable: Idempotency-Key already used for another request")
        if existing.state != DONE:
            error, message = REFUSALS.get(existing.state, REFUSALS[RUNNING])
            raise error(message)
        return existing

    def stored_response(self, record: IdempotencyRecord, headers: dict[str, str] | None = None) -> Response:
        extra = SSE_HEADERS if record.content_type == protocol.SSE else {}
        return Response(
            record.body,
            status_code=record.status,
            media_type=record.content_type or protocol.JSON,
            headers={**(headers or {}), **extra},
        )

    async def answered(self, ticket: Ticket, status: int, body: bytes, content_type: str = protocol.JSON) -> None:
        if len(body) > self.max_response:
            await self._finish(ticket, Outcome(DROPPED))
        else:
            await self._finish(ticket, Outcome(status=status, content_type=content_type, body=body))

    async def failed(self, ticket: Ticket, exc: errors.GatewayError, request_id: errors.JsonRpcId) -> None:
        await self.answered(ticket, exc.status, json.dumps(exc.to_jsonrpc(request_id)).encode())

    async def streamed(self, ticket: Ticket, session: str, stream: str) -> None:
        """A sessionful SSE answer: the record names its stream (events stay in the event log)."""
        await self._finish(ticket, Outcome(status=200, content_type=protocol.SSE, session=session, stream=stream))

    async def not_sent(self, ticket: Ticket) -> None:
        """The request never reached the upstream: forget the key so a retry can run it."""
        with contextlib.suppress(errors.StoreError):
            await self._store.forget(ticket.digest)

    async def recording(self, ticket: Ticket, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Relay a stateless SSE body and store it once it ended; a client gone midway cancelled it."""
        kept: list[bytes] = []
        size = 0
        complete = False
        try:
            async for chunk in body:
                size += len(chunk)
                if size <= self.max_response:
                    kept.append(chunk)
                yield chunk
            complete = True
        finally:
            if not complete:
                await asyncio.shield(self._finish(ticket, Outcome(INTERRUPTED)))
            elif size > self.max_response:
                await asyncio.shield(self._finish(ticket, Outcome(DROPPED)))
            else:
                outcome = Outcome(status=200, content_type=protocol.SSE, body=b"".join(kept))
                await asyncio.shield(self._finish(ticket, outcome))

    async def _finish(self, ticket: Ticket, outcome: Outcome) -> None:
        """A lost outcome leaves the record `running` until it expires: the repeat gets 409, never a rerun."""
        with contextlib.suppress(errors.StoreError):
            await self._store.finish(ticket.digest, outcome)
