"""Spans of a stream's later life (tracing on): a resumed delivery, in the trace the stream began in.

A stream keeps the `traceparent` of the request that opened it with its meta record in Redis
(`EventLog.create`), so a takeover pump or a resumed delivery on any replica starts its span
under that context: a call that moved between replicas reads as one trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.tracing import attributes as a
from gateway.tracing.api import TRACEPARENT, Attrs, Parent, Tracer


def stored(tracer: Tracer, traceparent: str) -> Parent | None:
    """The trace context a stream was opened in (None: it was untraced, or tracing is off)."""
    return tracer.extract({TRACEPARENT: traceparent}) if traceparent else None


async def resumed(
    tracer: Tracer, events: AsyncIterator[bytes], session: str, stream: str, after: int, trace: str
) -> AsyncIterator[bytes]:
    """Relay `events` inside a `mcp.stream.resume` span whose parent is the stream's stored context
    (else the resuming request's span), linked to the resuming request's span."""
    here = tracer.extract({TRACEPARENT: tracer.traceparent()})
    attrs: Attrs = {a.STREAM: stream, a.CURSOR: after, a.SESSION: a.session_prefix(session)}
    parent = stored(tracer, trace) or here
    span = tracer.start("mcp.stream.resume", attrs=attrs, parent=parent, links=[here] if here else ())
    sent = 0
    try:
        async for event in events:
            if b"\ndata: " in event:  # a message; not a priming event, retry hint or keep-alive
                sent += 1
            yield event
    finally:
        span.set(a.EVENTS, sent)
        span.end()
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
