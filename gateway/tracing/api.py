"""The tracing facade the gateway talks to, and its no-op implementation.

The gateway never imports OpenTelemetry: it holds a `Tracer` built once in the lifespan
(`gateway.tracing.setup`) and passed in like the other IO clients. With tracing off that is
`NOOP`, whose calls do nothing and allocate nothing (hot paths also branch on `enabled` so
they skip building attributes), and no OpenTelemetry module is ever imported.

A parent (`Parent`) is opaque: what `extract` made of a W3C trace context, handed back to
`span`/`start`. `span` makes the new span current (children started inside, and tasks spawned
inside, nest under it); `start` does not, for spans that live across the `yield`s of an async
generator (a delivery), whose body runs in its consumer's context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol

AttrValue = str | int | float | bool
Attrs = Mapping[str, AttrValue]
Kind = Literal["server", "client", "internal"]
Parent = object  # an implementation's context; only ever passed back to the tracer that made it

# The W3C trace context fields, as HTTP headers (lower case) and as SEP-414 `params._meta` keys.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
CARRIER_KEYS = (TRACEPARENT, TRACESTATE)


class Span(Protocol):
    def set(self, key: str, value: AttrValue) -> None: ...

    def rename(self, name: str) -> None: ...

    def error(self, kind: str, message: str = "") -> None:
        """Mark the span failed: status ERROR and `error.type` = `kind`."""

    def end(self) -> None:
        """End a span from `start` (spans from `span` end with their `with` block)."""

    def context(self) -> Parent:
        """This span as a parent or a link target, for spans started elsewhere."""


class Tracer(Protocol):
    enabled: bool

    def span(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        attrs: Attrs | None = None,
        parent: Parent | None = None,
        links: Sequence[Parent] = (),
        start_ns: int | None = None,
    ) -> AbstractContextManager[Span]:
        """A span made current for the block; `parent` None: the current span (if any)."""

    def start(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        attrs: Attrs | None = None,
        parent: Parent | None = None,
        links: Sequence[Parent] = (),
    ) -> Span:
        """A span that is not made current; the caller ends it."""

    def extract(self, carrier: Mapping[str, str]) -> Parent | None:
        """The trace context in `traceparent`/`tracestate` (headers or `_meta`); None if absent/invalid."""

    def inject(self, headers: Mapping[str, str]) -> dict[str, str]:
        """`headers` plus the current span's `traceparent`/`tracestate` (replacing any there)."""

    def traceparent(self) -> str:
        """The current span's `traceparent` ("" when none): what a stream stores for later spans."""

    def now_ns(self) -> int: ...

    def shutdown(self) -> None:
        """Flush what is buffered and stop exporting (blocking: run it off the event loop)."""


class NoopSpan:
    """A span that records nothing; also its own context manager."""

    def set(self, key: str, value: AttrValue) -> None:
        pass

    def rename(self, name: str) -> None:
        pass

    def error(self, kind: str, message: str = "") -> None:
        pass

    def end(self) -> None:
        pass

    def context(self) -> Parent:
        return None

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


NOOP_SPAN = NoopSpan()


class NoopTracer:
    """Tracing off: every call is a constant."""

    enabled = False

    def span(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        attrs: Attrs | None = None,
        parent: Parent | None = None,
        links: Sequence[Parent] = (),
        start_ns: int | None = None,
    ) -> NoopSpan:
        return NOOP_SPAN

    def start(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        attrs: Attrs | None = None,
        parent: Parent | None = None,
        links: Sequence[Parent] = (),
    ) -> NoopSpan:
        return NOOP_SPAN

    def extract(self, carrier: Mapping[str, str]) -> Parent | None:
        return None

    def inject(self, headers: Mapping[str, str]) -> dict[str, str]:
        return dict(headers)

    def traceparent(self) -> str:
        return ""

    def now_ns(self) -> int:
        return 0

    def shutdown(self) -> None:
        pass


NOOP = NoopTracer()
