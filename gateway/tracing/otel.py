"""The OpenTelemetry implementation of the facade (the `otel` extra); imported only when tracing is on.

The SDK reads its standard environment itself: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
(resource), `OTEL_TRACES_SAMPLER`/`_ARG` (sampler), `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`,
`_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, `_CERTIFICATE` (exporter) and `OTEL_BSP_*` (the batch
processor, which exports from its own thread). The provider is this object's, never the process
global one: nothing else in the process (an SDK a test imports, say) reports through it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from types import TracebackType

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.tracing.api import CARRIER_KEYS, TRACEPARENT, Attrs, AttrValue, Kind, Parent

KINDS = {"server": trace.SpanKind.SERVER, "client": trace.SpanKind.CLIENT, "internal": trace.SpanKind.INTERNAL}


class OTelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: AttrValue) -> None:
        self._span.set_attribute(key, value)

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def error(self, kind: str, message: str = "") -> None:
        self._span.set_attribute("error.type", kind)
        self._span.set_status(trace.Status(trace.StatusCode.ERROR, message or kind))

    def end(self) -> None:
        self._span.end()

    def context(self) -> Parent:
        return trace.set_span_in_context(self._span)


class Current:
    """A span made current for a `with` block, then ended (the SDK's `start_as_current_span`,
    without its two generator-based context managers: docs/decisions/0010)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: Token[Context] | None = None

    def __enter__(self) -> OTelSpan:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return OTelSpan(self._span)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if isinstance(exc, Exception):  # cancellation and exits are not failures
                self._span.record_exception(exc)
                self._span.set_attribute("error.type", type(exc).__name__)
                self._span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self._span.end()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)


class OTelTracer:
    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("mcp-gateway", _version())
        self._propagator = TraceContextTextMapPropagator()

    def span(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        attrs: Attrs | None = None,
        parent: Parent | None = None,
        links: Sequence[Parent] = (),
        start_ns: int | None = None,
    ) -> Current:
        return Current(self._start_span(name, kind, attrs, parent, links, start_ns))

    def start(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        attrs: Attrs | None = None,
        parent: Parent | None = None,
        links: Sequence[Parent] = (),
    ) -> OTelSpan:
        return OTelSpan(self._start_span(name, kind, attrs, parent, links, None))

    def _start_span(
        self,
        name: str,
        kind: Kind,
        attrs: Attrs | None,
        parent: Parent | None,
        links: Sequence[Parent],
        start_ns: int | None,
    ) -> trace.Span:
        context, otel_links = _context(parent), _links(links)
        return self._tracer.start_span(
            name, context=context, kind=KINDS[kind], attributes=attrs, links=otel_links, start_time=start_ns
        )

    def extract(self, carrier: Mapping[str, str]) -> Parent | None:
        fields = {k: carrier[k] for k in CARRIER_KEYS if isinstance(carrier.get(k), str)}
        if TRACEPARENT not in fields:
            return None
        context = self._propagator.extract(fields)
        return context if trace.get_current_span(context).get_span_context().is_valid else None

    def inject(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if k.lower() not in CARRIER_KEYS}
        self._propagator.inject(out)
        return out

    def traceparent(self) -> str:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier.get(TRACEPARENT, "")

    def now_ns(self) -> int:
        return time.time_ns()

    def shutdown(self) -> None:
        self._provider.shutdown()


def _context(parent: Parent | None) -> Context | None:
    return parent if isinstance(parent, Context) else None


def _links(parents: Sequence[Parent]) -> list[trace.Link]:
    links = []
    for parent in parents:
        if isinstance(parent, Context):
            span_context = trace.get_current_span(parent).get_span_context()
            if span_context.is_valid:
                links.append(trace.Link(span_context))
    return links


def _version() -> str:
    return __version__


def build(*, instance: str, env: Mapping[str, str] | None = None) -> OTelTracer:
    """A tracer exporting OTLP/HTTP (protobuf) in batches; `instance` names this replica
    (`service.instance.id`) unless OTEL_RESOURCE_ATTRIBUTES does."""
    env = os.environ if env is None else env
    configured = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    defaults: dict[str, str] = {}  # only what the environment leaves unset
    if "service.instance.id=" not in configured:
        defaults["service.instance.id"] = instance
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in configured:
        defaults["service.name"] = "mcp-gateway"
    resource = Resource.create(defaults)  # merged with OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER (default parentbased_always_on)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return OTelTracer(provider)
