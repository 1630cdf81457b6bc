"""Where the first copy of a sessionful request leaves its outcome for the repeats.

Two records may wait for it: the request-id claim (always) and the Idempotency-Key record
(when the client sent the header). Both learn the same facts: the JSON answer, the stream that
carries the answer, or that the request never reached the upstream (both are given up, so a
retry can run it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass

from starlette.background import BackgroundTask
from starlette.responses import Response

from gateway import errors
from gateway.replay.idempotent import Idempotency, Ticket
from gateway.store.claims import Claim, Claims


class _AfterSent(BackgroundTask):
    """The claim's record of a JSON answer, made once the answer was sent (the response awaits
    its background then). starlette's constructor asks `inspect` whether the function is async
    on every call (~1.5 % of a JSON call's CPU): not used."""

    def __init__(self, outcome: Outcome, status: int, body: bytes) -> None:
        self._outcome, self._status, self._body = outcome, status, body

    async def __call__(self) -> None:
        await self._outcome.sent(self._status, self._body)


@dataclass(slots=True)
class Outcome:
    """Treated as immutable (`dataclasses.replace` gives one with a ticket), not frozen: see Claim."""

    claims: Claims
    session: str
    ids: tuple[errors.JsonRpcId, ...]
    claim: Claim
    idempotency: Idempotency
    ticket: Ticket | None = None

    def _answered_claim(self, status: int, body: bytes) -> Claim:
        """The claim with its JSON answer (bounded: a larger one is marked as not kept)."""
        if len(body) > self.claims.max_answer:
            return dataclasses.replace(self.claim, dropped=True)
        return self.claim.answered(status, body.decode("utf-8", "replace"))

    async def answered(self, status: int, body: bytes) -> None:
        """Keep the JSON answer."""
        with contextlib.suppress(errors.StoreError):
            await self.claims.record(self.session, self.ids, self._answered_claim(status, body))
        if self.ticket is not None:
            await self.idempotency.answered(self.ticket, status, body)

    async def sent(self, status: int, body: bytes) -> None:
        """Keep the JSON answer that was sent: on the lane by a cast (nobody waits; its bytes
        follow the answer's), else by a round trip."""
        if not self.claims.record_nowait(self.session, self.ids, self._answered_claim(status, body)):
            await self.answered(status, body)

    async def deliver(self, answer: Response) -> Response:
        """Keep the JSON answer without making the client wait for Redis when only the claim
        waits for it: a repeat that comes before it shows polls the claim (replay.replays). It is
        kept once the answer was sent: on the lane by a cast (its reply dropped: no round trip
        held and no wake-up for it, its bytes right behind the answer's), else by a round trip.
        Not before: the work of the record (its JSON with the answer in it) would delay the
        answer. An Idempotency-Key repeat is not polled (it would get 409): with a ticket the
        answer is kept first."""
        if self.ticket is None:
            answer.background = _AfterSent(self, answer.status_code, bytes(answer.body))
        else:
            await self.answered(answer.status_code, bytes(answer.body))
        return answer

    async def failed(self, exc: errors.GatewayError) -> None:
        await self.answered(exc.status, json.dumps(exc.to_jsonrpc(self.ids[0] if self.ids else None)).encode())

    async def streamed(self, stream: str) -> None:
        """The claim named the stream from the start; the Idempotency-Key record learns it now."""
        if self.ticket is not None:
            await self.idempotency.streamed(self.ticket, self.session, stream)

    async def not_sent(self) -> None:
        with contextlib.suppress(errors.StoreError):
            await self.claims.release(self.session, self.ids)
        if self.ticket is not None:
            await self.idempotency.not_sent(self.ticket)
