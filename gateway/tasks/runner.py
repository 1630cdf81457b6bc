"""Runs a gateway-served task: the upstream `tools/call`, its MRTR rounds, and the record's states.

The replica that created the task runs it (owner = its replica id) under the Supervisor. While
the call is open a watcher re-reads the record every `watch_interval`: when the task turned
terminal elsewhere (a `tasks/cancel` on any replica, an orphan check) or expired, the upstream
response is closed, which cancels the call (2026-07-28 basic/transports: closing the stream
cancels the request). Every write is fenced by owner, and a terminal status is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.metrics import Metrics
from gateway.supervisor import Supervisor
from gateway.tasks import protocol
from gateway.tasks.record import TaskRecord
from gateway.tasks.store import APPLIED, TaskStore
from gateway.tracing import attributes as a
from gateway.tracing.api import NOOP, Attrs, Tracer
from gateway.upstream.client import UpstreamClient
from gateway.wire import sse

log = logging.getLogger("gateway.tasks.runner")

SHUTDOWN_ERROR = (
    "the gateway replica running this task shut down; its upstream call was closed and a 2026-07-28 "
    "call cannot be resumed, so whether the tool finished is unknown"
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Job:
    """What a runner needs that the record does not hold (kept in memory, never in Redis)."""

    task_id: str
    instance: str
    headers: Mapping[str, str]  # upstream headers, built from the client's by the HeaderPolicy
    params: Mapping[str, Any]  # the client's `tools/call` params
    timeout: float  # the task's TTL bounds its upstream call
    resume_round: int = 0  # > 0: adopted between rounds; wait for (or use) that round's answers first


@dataclass(frozen=True)
class Outcome:
    """The upstream's JSON-RPC answer, or the gateway error that stands for it."""

    message: Mapping[str, Any] | None = None
    error: errors.GatewayError | None = None


def error_object(exc: errors.GatewayError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return error


class Runner:
    def __init__(
        self,
        *,
        store: TaskStore,
        upstream: UpstreamClient,
        supervisor: Supervisor,
        replica_id: str,
        max_body: int,
        max_line: int,
        metrics: Metrics,
        watch_interval: float = 0.2,
        clock: Callable[[], int] = now_ms,
        tracer: Tracer = NOOP,
    ) -> None:
        self._tracer = tracer
        self._store = store
        self._upstream = upstream
        self._supervisor = supervisor
        self._replica = replica_id
        self._max_body = max_body
        self._max_line = max_line
        self._watch = watch_interval
        self._clock = clock
        self._metrics = metrics

    def start(self, job: Job) -> None:
        self._supervisor.spawn(self._run(job), name=f"task-{job.task_id[:8]}")

    async def _run(self, job: Job) -> None:
        """The whole task in one span, under the `tools/call` that created it (its task copied that
        context); the upstream call and its rounds nest under it."""
        attrs: Attrs = {a.TASK: job.task_id[: a.SESSION_PREFIX], a.TOOL: str(job.params.get("name", ""))}
        with self._tracer.span("mcp.task.run", attrs=attrs):
            await self._execute(job)

    async def _execute(self, job: Job) -> None:
        try:
            await self._drive(job)
        except asyncio.CancelledError:
            with contextlib.suppress(errors.StoreError):
                await self._fail(job.task_id, errors.GatewayError(SHUTDOWN_ERROR))
            raise
        except errors.GatewayError as exc:
            await self._fail(job.task_id, exc)
        except Exception:
            log.exception("task %s: runner failed", job.task_id[:8])
            await self._fail(job.task_id, errors.GatewayError("Internal error while running the task"))

    async def _drive(self, job: Job) -> None:
        params = protocol.upstream_params(job.params, progress_token=job.task_id)
        round_ = job.resume_round
        if round_:
            answered = await self._answers(job)
            if answered is None:
                return
            params = self._retry_params(params, answered, round_)
            await self._store.consume_answers(job.task_id, list(answered.answers))
        while True:
            outcome = await self._watched(job, params, round_)
            if outcome is None:
                return  # cancelled, failed elsewhere or expired: nothing more to write
            if outcome.error is not None:
                raise outcome.error
            message = outcome.message or {}
            if "error" in message:
                # tasks §Task Execution Errors: a JSON-RPC error -> failed, the error inlined.
                error = message["error"] if isinstance(message["error"], dict) else {"code": -32603, "message": "?"}
                await self._finish(job.task_id, "failed", error=error)
                return
            result = message.get("result")
            if not isinstance(result, dict):
                raise errors.UpstreamError("Bad upstream answer: result is not an object")
            if result.get("resultType") == "task":
                raise errors.UpstreamError("Bad upstream answer: the upstream created a task of its own")
            if result.get("resultType") != "input_required":
                # tasks §Task Execution Errors: a tool error (isError) is still `completed`.
                await self._finish(job.task_id, "completed", result=result)
                return
            round_ += 1
            answered = await self._ask(job, result, round_)
            if answered is None:
                return
            params = self._retry_params(params, answered, round_)
            await self._store.consume_answers(job.task_id, list(answered.answers))

    async def _ask(self, job: Job, result: Mapping[str, Any], round_: int) -> TaskRecord | None:
        """MRTR (2026-07-28 basic/patterns/mrtr) surfaced as `input_required`; wait for `tasks/update`."""
        requests = result.get("inputRequests")
        if not isinstance(requests, dict) or not requests:
            raise errors.UpstreamError("Bad upstream answer: input_required without inputRequests")
        # tasks §Task Update Requests: keys are unique over the task's lifetime -> prefix the round.
        inputs = {f"{round_}.{key}": json.dumps(value) for key, value in requests.items()}
        state = result.get("requestState")
        applied = await self._store.ask(
            job.task_id, self._clock(), self._replica, inputs, state if isinstance(state, str) else None, round_
        )
        if applied != APPLIED:
            return None
        return await self._answers(job)

    async def _answers(self, job: Job) -> TaskRecord | None:
        """Wait until `tasks/update` (on any replica) filed every answer; None: the task is over."""
        while True:
            record = await self._store.load(job.task_id)
            if record is None or record.terminal or record.owner != self._replica:
                return None
            if record.status == "working":
                return record
            await asyncio.sleep(self._watch)

    @staticmethod
    def _retry_params(params: Mapping[str, Any], record: TaskRecord, round_: int) -> dict[str, Any]:
        prefix = f"{round_}."
        responses = {k.removeprefix(prefix): json.loads(v) for k, v in record.answers.items() if k.startswith(prefix)}
        retry = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
        retry["inputResponses"] = responses
        if record.state is not None:
            retry["requestState"] = record.state
        return retry

    async def _watched(self, job: Job, params: Mapping[str, Any], round_: int) -> Outcome | None:
        """The upstream call, closed as soon as the record says the task is over (or gone)."""
        call = self._supervisor.spawn(self._call(job, params, round_), name=f"task-call-{job.task_id[:8]}")
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=self._watch)
                if done:
                    outcome: Outcome = call.result()
                    return outcome
                record = await self._store.load(job.task_id)
                if record is None or record.terminal or record.owner != self._replica:
                    return None
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call

    async def _call(self, job: Job, params: Mapping[str, Any], round_: int) -> Outcome:
        request_id = f"{job.task_id}.{round_}"
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})
        try:
            response = await self._upstream.send("POST", job.instance, job.headers, body.encode(), timeout=job.timeout)
            try:
                if response.is_sse:
                    return Outcome(message=await self._from_stream(job, response.chunks(), request_id))
                payload = await response.read(self._max_body)
            finally:
                response.close()
            return Outcome(message=_answer(payload, response.status, request_id))
        except errors.GatewayError as exc:
            return Outcome(error=exc)

    async def _from_stream(self, job: Job, chunks: AsyncIterator[bytes], request_id: str) -> Mapping[str, Any]:
        parser = sse.Parser(self._max_line)
        async for chunk in chunks:
            try:
                events = parser.feed(chunk)
            except sse.SSEError as exc:
                raise errors.UpstreamError(f"Bad upstream answer: {exc}") from exc
            for event in events:
                message = _json(event.data)
                if message is None:
                    continue
                if message.get("id") == request_id and ("result" in message or "error" in message):
                    return message
                if message.get("method") == "notifications/progress" and isinstance(message.get("params"), dict):
                    text = protocol.progress_message(message["params"])
                    await self._store.transition(job.task_id, self._clock(), {"message": text}, owner=self._replica)
        raise errors.UpstreamError("Upstream stream ended without an answer to the task's call")

    async def _finish(self, task_id: str, status: str, *, result: Any = None, error: Any = None) -> None:
        fields = {"status": status}
        if result is not None:
            fields["result"] = json.dumps(result)
        if error is not None:
            fields["error"] = json.dumps(error)
            fields["message"] = str(error.get("message", "")) if isinstance(error, dict) else ""
        applied = await self._store.transition(task_id, self._clock(), fields, owner=self._replica, clear_inputs=True)
        if applied == APPLIED:
            self._metrics.tasks.labels(status).inc()

    async def _fail(self, task_id: str, exc: errors.GatewayError) -> None:
        try:
            await self._finish(task_id, "failed", error=error_object(exc))
        except errors.StoreError as store_exc:
            # The record stays non-terminal; the orphan check on any replica fails it later.
            log.error("task %s: cannot record its failure: %s", task_id[:8], store_exc)


def _json(data: str | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _answer(payload: bytes, status: int, request_id: str) -> Mapping[str, Any]:
    message = _json(payload.decode("utf-8", "replace"))
    if message is None or not ("result" in message or "error" in message):
        raise errors.UpstreamError(f"Bad upstream answer: HTTP {status} without a JSON-RPC response")
    return message
