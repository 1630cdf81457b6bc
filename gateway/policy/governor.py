"""The one call each era makes: decide a request (deny, allow, quotas) before any upstream work,
and filter its list answer on the way back.

The decision is stashed on the request (`request.state.policy`) for the audit record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from gateway import errors
from gateway.policy import lists
from gateway.policy.counters import PolicyCounters
from gateway.policy.engine import CompiledPolicy
from gateway.policy.refusals import Denied, QuotaExceeded
from gateway.policy.source import PolicySource
from gateway.policy.variables import request_headers, target_name, variables
from gateway.store.quotas import Quotas, rule_id
from gateway.upstream.client import UpstreamResponse
from gateway.wire import sse
from gateway.wire.protocol import Message


@dataclass(frozen=True)
class Checked:
    """What the policy decided for one request, kept for its list filter and its audit record."""

    policy: CompiledPolicy | None  # None: no policy configured (decided for the audit trail only)
    variables: Mapping[str, Any]
    method: str
    request_id: Any
    decision: str  # allow, deny, limited
    rule: str
    memo: Hashable = None  # the request's memo key (lists decide each item under it), None: no memo


def state_of(request: Request) -> dict[str, Any]:
    """The request's state as its plain dict (`request.state` raises, slowly, for a name not set)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state


def memo_key(request: Request, found: Mapping[str, Any]) -> tuple[str | None, str, str]:
    """What fixes `jwt`, `client.ip` and `pool` for a policy's memo: the verified token itself."""
    return (request.headers.get("authorization"), found["client.ip"], found["pool"])


def checked_of(request: Request) -> Checked | None:
    """What the policy decided for this request (None: not decided)."""
    checked: Checked | None = state_of(request).get("policy")
    return checked


class Governor:
    def __init__(
        self,
        source: PolicySource | None,
        quotas: Quotas,
        counters: PolicyCounters,
        client_ip: Callable[[Request], str],
    ) -> None:
        self._source = source
        self._quotas = quotas
        self._counters = counters
        self._client_ip = client_ip

    async def check(
        self, request: Request, pool: str, method: str, params: Mapping[str, Any] | None, request_id: Any
    ) -> None:
        """Raise Denied (403) or QuotaExceeded (429), or return with the request allowed."""
        # one version for the whole request, even if a reload lands meanwhile
        policy = self._source.current if self._source is not None else None
        state = state_of(request)
        found = variables(
            claims=state.get("claims") or {},
            client_ip=self._client_ip(request),
            pool=pool,
            method=method,
            params=params,
            # the headers are copied only for a policy that reads them (else they are empty)
            headers=request_headers(request.headers.items()) if policy is not None and policy.reads_headers else {},
        )
        if policy is None:
            self._record(request, Checked(None, found, method, request_id, "allow", "default"))
            return
        memo = memo_key(request, found) if policy.memoizable else None
        if memo is not None:
            decision = policy.decide_as((memo, method, target_name(found)), found)
        else:
            decision = policy.decide(found)
        if decision.result == "deny":
            self._record(request, Checked(policy, found, method, request_id, "deny", decision.rule, memo))
            raise Denied(decision.rule)
        for limit, key in decision.limits:
            taken = await self._quotas.take(rule_id(limit.text), key, per_second=limit.per_second, burst=limit.burst)
            if not taken.admitted:
                self._counters.quota_rejections.labels(limit.text).inc()
                self._record(request, Checked(policy, found, method, request_id, "limited", limit.text, memo))
                raise QuotaExceeded(limit.text, taken.retry_after_header)
        self._record(request, Checked(policy, found, method, request_id, "allow", decision.rule, memo))

    async def check_all(self, request: Request, pool: str, messages: Iterable[Message]) -> None:
        """Every request of a body (a 2025-03-26 batch may hold several), each decided on its own."""
        for message in messages:
            params = message.raw.get("params")
            params = params if isinstance(params, dict) else None
            await self.check(request, pool, str(message.method), params, message.id)

    def _record(self, request: Request, checked: Checked) -> None:
        self._counters.decisions.labels(checked.decision, checked.rule).inc()
        state_of(request)["policy"] = checked

    @staticmethod
    def filters(request: Request) -> Checked | None:
        """The request's decision when its answer is a list to filter (else None)."""
        checked = checked_of(request)
        if checked is None or checked.policy is None or checked.method not in lists.LISTS:
            return None
        if not checked.policy.filters:
            return None
        return checked

    @classmethod
    def filter_payload(cls, request: Request, payload: bytes) -> bytes:
        """A JSON list answer filtered for this request's principal (other answers unchanged)."""
        checked = cls.filters(request)
        if checked is None:
            return payload
        return lists.filter_payload(checked.policy, checked.variables, checked.method, payload, checked.memo)

    @classmethod
    def filter_result(cls, request: Request, result: Any) -> Any:
        """A list result (a cached one: kept whole, served filtered) for this request's principal."""
        checked = cls.filters(request)
        if checked is None:
            return result
        return lists.filter_result(checked.policy, checked.variables, checked.method, result, checked.memo)


async def filtered_stream(checked: Checked, chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[bytes]:
    """An SSE answer with its list response filtered: events parsed and encoded again."""
    parser = sse.Parser(max_line)
    async for chunk in chunks:
        out: list[bytes] = []
        for event in parser.feed(chunk):
            data = event.data
            if data:
                payload = lists.filter_payload(
                    checked.policy, checked.variables, checked.method, data.encode(), checked.memo
                )
                data = payload.decode()
            out.append(sse.encode(data, id=event.id, event=event.event, retry=event.retry))
        if out:
            yield b"".join(out)


async def filtered_list(request: Request, response: UpstreamResponse, request_id: Any, limit: int) -> bytes | None:
    """The whole upstream answer to a list request whose policy filters (JSON or SSE) as one filtered
    JSON response; None for any other request (relayed as it is). Lists are short answers: collecting
    them costs the client no progress it would have seen."""
    checked = Governor.filters(request)
    if checked is None or response.status != 200:
        return None
    payload = await response.read(limit)
    texts = [payload]
    if response.is_sse:
        try:
            texts = [e.data.encode() for e in sse.Parser().feed(payload + b"\n\n") if e.data]
        except sse.SSEError as exc:
            raise errors.UpstreamError(f"Bad upstream answer: {exc}") from exc
    for text in texts:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(message, dict) and message.get("id") == request_id:
            filtered = lists.filter_message(checked.policy, checked.variables, checked.method, message, checked.memo)
            return json.dumps(filtered).encode()
    raise errors.UpstreamError("Bad upstream answer: no response to the list request")
