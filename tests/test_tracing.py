"""The tracing facade: the no-op tracer, the environment rules, and the OpenTelemetry tracer
(exporting to the SDK's in-memory exporter: no sockets)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway import errors
from gateway.tracing import otel
from gateway.tracing.api import NOOP, NOOP_SPAN
from gateway.tracing.setup import plan

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exported: InMemorySpanExporter) -> Iterator[otel.OTelTracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = otel.OTelTracer(provider)
    yield tracer
    tracer.shutdown()


def spans(exported: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exported.get_finished_spans()}


# --- off ------------------------------------------------------------------------------------------


def test_noop_tracer_does_nothing() -> None:
    assert not NOOP.enabled
    with NOOP.span("x", attrs={"a": 1}) as span:
        assert span is NOOP_SPAN
        span.set("k", "v")
        span.error("E")
    assert NOOP.start("y") is NOOP_SPAN
    assert NOOP.extract({"traceparent": TRACEPARENT}) is None
    headers = {"traceparent": TRACEPARENT, "Accept": "x"}
    injected = NOOP.inject(headers)
    assert injected == headers and injected is not headers  # the client's traceparent passes as it is
    assert NOOP.traceparent() == "" and NOOP.now_ns() == 0


def test_tracing_off_imports_no_opentelemetry() -> None:
    """No endpoint: the app is built and its tracer chosen without loading the SDK's tracing or an
    exporter. (redis-py loads the OpenTelemetry API by itself when it is installed, for its own
    opt-in metrics: so the check is on what only the gateway's tracing would load.)"""
    code = (
        "import sys\n"
        "from gateway.config import Settings\n"
        "from gateway.http.app import create_app\n"
        "from gateway.tracing.setup import plan\n"
        "create_app(Settings(upstream=['default=http://127.0.0.1:9/mcp']))\n"
        "assert plan({}) is None\n"
        "loaded = [m for m in sys.modules if m == 'gateway.tracing.otel'\n"
        "          or m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


# --- the environment ------------------------------------------------------------------------------


def test_plan_follows_the_standard_variables() -> None:
    assert plan({}) is None
    on = plan({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert on is not None and on.endpoint == "http://collector:4318"
    traces_only = plan({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert traces_only is not None and traces_only.endpoint == "http://c:4318/v1/traces"
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    assert plan({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    assert plan({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) is None
    assert plan({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) is not None


@pytest.mark.parametrize(
    "extra",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
        {"OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_plan_refuses_what_it_cannot_export(extra: dict[str, str]) -> None:
    with pytest.raises(errors.ConfigError, match="not supported"):
        plan({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", **extra})


def test_built_tracer_names_the_service_and_replica() -> None:
    tracer = otel.build(instance="host:1:ab", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        resource = tracer._provider.resource.attributes
        assert resource["service.instance.id"] == "host:1:ab"
        assert resource["service.name"] in ("mcp-gateway", "unknown_service")  # OTEL_SERVICE_NAME, if the env has it
    finally:
        tracer.shutdown()


# --- on -------------------------------------------------------------------------------------------


def test_server_span_continues_the_client_trace_and_children_nest(
    tracer: otel.OTelTracer, exported: InMemorySpanExporter
) -> None:
    parent = tracer.extract({"traceparent": TRACEPARENT, "tracestate": "congo=t61"})
    assert parent is not None
    theirs = "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"
    attrs = {"mcp.method.name": "tools/call"}
    with (
        tracer.span("tools/call slow", kind="server", parent=parent, attrs=attrs),
        tracer.span("upstream POST", kind="client"),
    ):
        headers = tracer.inject({"Traceparent": theirs, "A": "b"})
        stored = tracer.traceparent()
    got = spans(exported)
    server, client = got["tools/call slow"], got["upstream POST"]
    assert server.kind == SpanKind.SERVER and client.kind == SpanKind.CLIENT
    assert format(server.context.trace_id, "032x") == CLIENT_TRACE
    assert server.parent is not None and format(server.parent.span_id, "016x") == CLIENT_SPAN
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    # the upstream's traceparent names the client span; the client's own header is replaced, not doubled
    assert headers["traceparent"] == f"00-{CLIENT_TRACE}-{client.context.span_id:016x}-01"
    assert "Traceparent" not in headers and headers["A"] == "b"
    assert headers["tracestate"] == "congo=t61"
    assert stored == headers["traceparent"]


def test_extract_ignores_missing_or_malformed_context(tracer: otel.OTelTracer) -> None:
    assert tracer.extract({}) is None
    assert tracer.extract({"traceparent": "garbage"}) is None
    assert tracer.extract({"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"}) is None
    assert tracer.extract({"traceparent": 7}) is None  # type: ignore[dict-item]  # _meta values are JSON


def test_start_is_not_current_and_links(tracer: otel.OTelTracer, exported: InMemorySpanExporter) -> None:
    stored = tracer.extract({"traceparent": TRACEPARENT})
    with tracer.span("resume request", kind="server") as request:
        here = request.context()
        span = tracer.start("mcp.stream.resume", parent=stored, links=[here])
        with tracer.span("inside"):
            pass
        span.set("mcpgw.stream.events", 3)
        span.end()
    got = spans(exported)
    resume, inside, req = got["mcp.stream.resume"], got["inside"], got["resume request"]
    assert format(resume.context.trace_id, "032x") == CLIENT_TRACE
    assert inside.parent is not None and inside.parent.span_id == req.context.span_id  # start() did not become current
    assert [link.context.span_id for link in resume.links] == [req.context.span_id]
    assert resume.attributes is not None and resume.attributes["mcpgw.stream.events"] == 3


def test_errors_mark_the_span(tracer: otel.OTelTracer, exported: InMemorySpanExporter) -> None:
    with pytest.raises(errors.UpstreamTimeout), tracer.span("upstream POST", kind="client"):
        raise errors.UpstreamTimeout("Upstream timed out")
    with tracer.span("explicit") as span:
        span.error("503", "no instance")
    failed = spans(exported)
    assert failed["upstream POST"].status.status_code == StatusCode.ERROR
    assert failed["upstream POST"].attributes is not None
    assert failed["upstream POST"].attributes["error.type"] == "UpstreamTimeout"
    assert failed["explicit"].status.status_code == StatusCode.ERROR


def test_explicit_start_time(tracer: otel.OTelTracer, exported: InMemorySpanExporter) -> None:
    started = tracer.now_ns()
    with tracer.span("mcp.stream.takeover", start_ns=started):
        pass
    assert spans(exported)["mcp.stream.takeover"].start_time == started
