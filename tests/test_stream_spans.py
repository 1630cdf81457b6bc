"""streams.spans: a resumed delivery's span joins the stream's stored trace and links the request."""

from __future__ import annotations

from collections.abc import AsyncIterator

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.streams import spans
from gateway.tracing.api import NOOP
from gateway.tracing.otel import OTelTracer

STORED_TRACE = "0af7651916cd43dd8448eb211c80319c"
STORED = f"00-{STORED_TRACE}-b7ad6b7169203331-01"


async def three() -> AsyncIterator[bytes]:
    yield b"id: S1.4\nretry: 100\ndata:\n\n"  # the priming event of a resumed 2025-11-25 stream
    for i in range(3):
        yield b"id: S1.%d\ndata: {}\n\n" % (i + 5)
    yield b": keep-alive\n\n"


async def test_resume_span_parent_is_the_stored_context_and_links_the_request() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = OTelTracer(provider)
    with tracer.span("GET /mcp", kind="server"):
        got = [e async for e in spans.resumed(tracer, three(), "sessionid-long", "S1", 4, STORED)]
    assert len(got) == 5  # everything passes; only the three messages count
    by_name = {s.name: s for s in exported.get_finished_spans()}
    resume, request = by_name["mcp.stream.resume"], by_name["GET /mcp"]
    assert format(resume.context.trace_id, "032x") == STORED_TRACE
    assert resume.parent is not None and format(resume.parent.span_id, "016x") == "b7ad6b7169203331"
    assert [link.context.span_id for link in resume.links] == [request.context.span_id]
    assert resume.attributes is not None
    assert dict(resume.attributes) == {
        "mcpgw.stream.id": "S1",
        "mcpgw.stream.cursor": 4,
        "mcp.session.id": "sessioni",
        "mcpgw.stream.events": 3,
    }


async def test_untraced_stream_resumes_under_the_request() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = OTelTracer(provider)
    with tracer.span("GET /mcp", kind="server"):
        assert len([e async for e in spans.resumed(tracer, three(), "s", "S1", 0, "")]) == 5
    by_name = {s.name: s for s in exported.get_finished_spans()}
    resume = by_name["mcp.stream.resume"]
    assert resume.parent is not None and resume.parent.span_id == by_name["GET /mcp"].context.span_id
    assert spans.stored(tracer, "") is None and spans.stored(NOOP, STORED) is None
