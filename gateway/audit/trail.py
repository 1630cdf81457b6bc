"""The audit trail's one entry point: the request handler calls `after` once the answer is made."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from gateway.audit import records
from gateway.audit.sinks import Sink
from gateway.policy.governor import checked_of
from gateway.wire import protocol


class AuditTrail:
    def __init__(self, sinks: Sequence[Sink], *, replica: str, with_arguments: bool) -> None:
        self._sinks = tuple(sinks)
        self._replica = replica
        self._with_arguments = with_arguments

    def after(self, request: Request, response: Response, era: str, seconds: float) -> None:
        """One record for a request the policy decided on (none for notifications, responses, or a
        request refused before a principal was known)."""
        checked = checked_of(request)
        if checked is None:
            return
        session = request.headers.get(protocol.H_SESSION) or response.headers.get(protocol.H_SESSION) or ""
        record = records.record(
            replica=self._replica,
            principal=getattr(request.state, "principal", ""),  # a slot of the gateway's own request state
            session=session,
            variables=checked.variables,
            request_id=checked.request_id,
            decision=checked.decision,
            rule=checked.rule,
            answered=records.Answered(response.status_code, getattr(response, "body", None), era, seconds),
            traceparent=request.headers.get("traceparent"),
            with_arguments=self._with_arguments,
        )
        line = records.encode(record)
        for sink in self._sinks:
            sink.write(line)
