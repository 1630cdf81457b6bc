"""The served protocol: `LeanHttpToolsProtocol` with the connection rules of `http/framing.py`.

- Head bytes are counted as they arrive and the parser is never fed more than `--max-header-bytes`
  of one head (request line and header lines alike: httptools buffers an unfinished line whole,
  so a single 64 MB line would otherwise be held in full): past it, 431 and close.
- A head must arrive whole within `--header-timeout` of its first byte (a new connection's first
  head within that long of the connection), a body must not pause longer than `--body-idle-timeout`
  (time the gateway itself is not reading, flow control or a pending `100 Continue`, does not
  count): else 408 and close. One timer per connection, re-armed only while a wait is on.
- Connections are counted per process and per client address (`framing.Admission`); one over a
  cap may send one health check, anything else is answered 503/429 and closed.
After a refusal the connection lingers half-closed: the answer then FIN, what the client still sends
is read and dropped for `LINGER_SECONDS`, so it reads the answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from typing import TYPE_CHECKING, Any

from gateway import errors
from gateway.http import framing
from gateway.http.framing import Admission, ConnectionRules, Verdict
from gateway.http.server import LeanHttpToolsProtocol

if TYPE_CHECKING:  # not at run time: a `--workers` worker imports this before it answers its parent
    from gateway.config import Settings

log = logging.getLogger("gateway.http.connections")


class GuardedHttpToolsProtocol(LeanHttpToolsProtocol):
    """`uvicorn.Config(http=protocol_factory(settings))`: the lean protocol, bounded."""

    __slots__ = (
        "_admission",
        "_client_key",
        "_completed",
        "_finished_headers",
        "_head_bytes",
        "_health_only",
        "_in_head",
        "_refused",
        "_rules",
        "_timer",
        "_waiting_since",
    )

    def __init__(self, *args: Any, rules: ConnectionRules, admission: Admission, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rules = rules
        self._admission = admission
        self._client_key = ""
        self._health_only: errors.GatewayError | None = None  # the refusal of a connection over a cap
        self._in_head = True  # the parser reads (or will next read) a request head
        self._head_bytes = 0  # of the current head, fed to the parser
        self._completed = False  # a message ended during the current feed (a pipelined one may follow)
        self._finished_headers: list[tuple[bytes, bytes]] | None = None  # the header list of the last one
        self._refused = False  # answered and lingering: nothing more is parsed
        self._waiting_since: float | None = None  # since when the client owes us bytes; None: it owes none
        self._timer: asyncio.TimerHandle | None = None

    # --- connection life -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._client_key = self.client[0] if self.client else ""
        verdict, refusal = self._admission.open(self._client_key)
        if verdict is Verdict.REFUSE and refusal is not None:
            self._refuse(refusal, linger=False)  # past the reserve: no descriptor kept for it
            return
        self._health_only = refusal
        self._waiting_since = self.loop.time()  # a new connection owes its first head
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._admission.close(self._client_key)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # --- reading -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after an answer: dropped
        limit = self._rules.max_header_bytes
        while True:
            if self._in_head:
                if self._waiting_since is None:
                    self._waiting_since = self.loop.time()  # the first byte of a head
                room = limit - self._head_bytes
                piece, data = (data[:room], data[room:]) if len(data) > room else (data, b"")
                self._head_bytes += len(piece)
            else:
                self._waiting_since = self.loop.time()  # the body moved
                piece, data = data, b""
            self._completed = False
            super().data_received(piece)
            if self._completed:  # a message ended in this piece; a head that began after it is estimated
                began = self.headers is not self._finished_headers  # uvicorn's on_message_begin made a new list
                self._head_bytes = framing.head_estimate(self.url, self.headers) if began else 0
            # over: a head that had the whole room and is not done, or a begun one already past it
            if self._in_head and ((data and not self._completed) or self._head_bytes > limit):
                if not self.transport.is_closing():  # (closing: a parse error was answered 400)
                    self._refuse(framing.headers_too_large(limit))
                return
            if not data:
                break
            if self.transport.is_closing():
                return
        if self._timer is None and self._waiting_since is not None:
            self._arm()

    def app_for(self, scope: Any) -> Any:
        """Called once the head is whole (before the cycle is built): the head's bounds are over,
        the body's wait is counted from the head's first byte; a refused request gets its answer."""
        self._in_head = False
        self._head_bytes = 0
        refusal = framing.host_refusal(self.headers, scope["http_version"])
        health_only = self._health_only
        if health_only is not None and refusal is None:
            if scope["path"] in framing.HEALTH_PATHS and scope["method"] in ("GET", "HEAD"):
                return framing.CloseAfter(super().app_for(scope))  # a health check over a cap: served once
            refusal = health_only
        if refusal is None:
            return self.app if self.limit_concurrency is None else super().app_for(scope)
        return framing.RefusalApp(refusal)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._waiting_since = None  # the request is whole: the client owes nothing until its next one
        self._completed = True
        self._finished_headers = self.headers
        super().on_message_complete()

    # --- deadlines -----------------------------------------------------------------------

    def _arm(self) -> None:
        self._timer = self.loop.call_later(self._allowed(), self._due)

    def _allowed(self) -> float:
        if not self._in_head:
            return self._rules.body_idle_timeout
        if self._health_only is not None:
            return min(self._rules.header_timeout, framing.PROBATION_SECONDS)
        return self._rules.header_timeout

    def _due(self) -> None:
        self._timer = None
        if self._refused:
            self.transport.close()  # the lingering is over
            return
        since = self._waiting_since
        if since is None or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (not self._in_head and cycle is not None and cycle.waiting_for_100_continue):
            self._waiting_since = since = now  # the gateway is the one not reading: not the client's time
        left = since + self._allowed() - now
        if left > 0:
            self._timer = self.loop.call_later(left, self._due)
        elif self._in_head and self._head_bytes == 0:
            self.transport.close()  # a connection that never sent a byte: nothing to answer
        else:
            self._refuse(framing.RequestTimeout("Request Timeout: the request did not arrive in time"))

    # --- refusing ------------------------------------------------------------------------

    def _refuse(self, exc: errors.GatewayError, *, linger: bool = True) -> None:
        """Answer `exc` and linger half-closed; a response already under way is cut instead."""
        self._refused = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's `receive` says disconnect; its `send` writes nothing
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        transport = self.transport
        transport.write(framing.canned(exc, self.server_state.default_headers))
        if not linger:
            transport.close()
            return
        try:
            transport.write_eof()
        except (NotImplementedError, RuntimeError, OSError):
            transport.close()
            return
        self.flow.resume_reading()  # read (and drop) what the client still sends
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(framing.LINGER_SECONDS, self._due)


def descriptor_limit() -> int:
    """The process's open-file limit, its soft value first raised to the hard one (as Go's runtime
    does): a replica holds two descriptors per streaming client (theirs and the upstream's)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_rules(settings: Settings, descriptors: int) -> ConnectionRules:
    cap = framing.connection_budget(settings.max_connections, descriptors)
    if cap < settings.max_connections:
        log.warning(
            "--max-connections %d does not fit the open-file limit %d: capped at %d",
            settings.max_connections,
            descriptors,
            cap,
        )
    return ConnectionRules(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_idle_timeout=settings.body_idle_timeout,
        max_connections=cap,
        max_connections_per_client=settings.max_connections_per_client,
    )


def protocol_factory(settings: Settings) -> Any:
    """What `uvicorn.Config(http=...)` takes: the guarded protocol with this process's rules and
    its own connection counts (a `--workers` worker gets a copy, counting its own connections)."""
    rules = connection_rules(settings, descriptor_limit())
    admission = Admission(rules, per_client=not settings.trust_forwarded_for)
    return functools.partial(GuardedHttpToolsProtocol, rules=rules, admission=admission)
