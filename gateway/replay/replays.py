"""What a replayed request gets: the first copy's answer, never a second execution.

A repeat (same session, same request id, same body) is answered from the first copy's claim:
its recorded JSON answer, or its stream from the first event (the event log holds every event,
so a repeat while the first copy runs and one after it finished are the same delivery). A claim
with no outcome yet (the first copy is waiting for the upstream's headers) is polled until the
outcome shows up, the first copy's replica is no longer alive (its liveness key expired), or the
first copy's own bound (`--request-timeout`) has passed; after that its outcome is unknown and
the repeat gets a JSON-RPC error, recorded so every later repeat gets the same one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway import errors
from gateway.store.claims import Claim, Claims
from gateway.store.eventlog import EventLog
from gateway.store.sessions import SessionRecord
from gateway.streams.liveness import Liveness
from gateway.wire import codec
from gateway.wire.protocol import Body


@dataclass(frozen=True)
class Recorded:
    """Answer the repeat with the first copy's JSON answer."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Attach:
    """Deliver the first copy's stream to the repeat, from its first event."""

    stream: str


def body_hash(body: Body) -> str:
    """A digest of the messages, independent of whitespace and key order."""
    return _digest(codec.canonical([m.raw for m in body.messages], strict=body.strict))


def same_body(stored: str, digest: str, body: Body) -> bool:
    """Whether a claim's digest is this body's. A claim written before msgspec (a replica of an
    earlier version, during a rolling update) holds `json`'s canonical form: compared on a
    mismatch only, so only a body that differs, or such a claim, pays for the second digest (and
    a body `json` parsed has that form already: its digest was the only one)."""
    if stored == digest:
        return True
    return body.strict and stored == _digest(codec.legacy_canonical([m.raw for m in body.messages]))


def _digest(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()[:32]


class Replays:
    def __init__(
        self,
        claims: Claims,
        log_: EventLog,
        liveness: Liveness | None,
        *,
        wait: float,
        poll: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._claims = claims
        self._log = log_
        self._liveness = liveness
        self._wait = wait
        self._poll = poll
        self._clock = clock

    async def resolve(self, record: SessionRecord, body: Body, digest: str, taken: Claim) -> Recorded | Attach:
        """The first copy's outcome for a repeat; raises the spec-shaped error when there is none."""
        ids = body.request_ids
        claim: Claim | None = taken
        while claim is not None:
            if not same_body(claim.body_hash, digest, body):
                # basic §Requests: the id MUST NOT have been used before in this session.
                raise errors.RequestIdReused("Invalid Request: request id already used in this session")
            if claim.status:
                return Recorded(claim.status, (claim.answer or "").encode())
            if claim.dropped:
                raise errors.RequestIdReused(
                    f"Invalid Request: request id already used; its answer (over {self._claims.max_answer} "
                    "bytes) was not kept"
                )
            if await self._log.meta(record.id, claim.stream) is not None:
                return Attach(claim.stream)
            if self._clock() - claim.at > self._wait or not await self._claimer_alive(claim):
                settled = await self._claims.get(record.id, ids[0])
                if settled == claim:  # nothing was recorded meanwhile: nobody will record it now
                    return await self._unknown(record, ids, claim)
                claim = settled
                continue
            await asyncio.sleep(self._poll)
            claim = await self._claims.get(record.id, ids[0])
        # The first copy never reached the upstream and gave its claim up: this copy may retry.
        raise errors.UpstreamUnavailable("Upstream unavailable for the first copy of this request; retry")

    async def _claimer_alive(self, claim: Claim) -> bool:
        if self._liveness is None or not claim.replica:
            return True
        return claim.replica in await self._liveness.alive([claim.replica])

    async def _unknown(self, record: SessionRecord, ids: tuple[errors.JsonRpcId, ...], claim: Claim) -> Recorded:
        exc = errors.UpstreamTimeout("The first copy of this request got no answer in time; its outcome is unknown")
        answer = json.dumps(exc.to_jsonrpc(ids[0] if len(ids) == 1 else None))
        await self._claims.record(record.id, ids, replace(claim, status=exc.status, answer=answer))
        return Recorded(exc.status, answer.encode())
