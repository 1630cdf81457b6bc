"""The task surface of a pool: `tools/call` of a task tool, `tasks/get|update|cancel`.

Any replica answers any task: the record is in Redis. A task is visible only to the principal
that created it (without auth: to whoever holds its unguessable id); everyone else, and every
expired id, gets "task not found". A non-terminal task whose runner replica is gone is taken
over on the spot: adopted when no upstream call was open (it waits for input, or has it all and
the next round is not sent yet), else failed, so no reader ever sees it `working` forever.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import errors
from gateway.metrics import Metrics
from gateway.tasks import protocol
from gateway.tasks.config import TaskSupport, TaskTools
from gateway.tasks.record import TaskRecord
from gateway.tasks.runner import Job, Runner, now_ms
from gateway.tasks.store import APPLIED, TaskStore
from gateway.wire.protocol import Message

log = logging.getLogger("gateway.tasks.service")

ACK: Mapping[str, Any] = {"resultType": "complete"}  # tasks §Task Cancellation / §Task Update: empty result
ORPHAN_ERROR = (
    "the gateway replica running this task stopped before the tool call ended; a 2026-07-28 upstream "
    "call cannot be re-attached, so whether the tool finished is unknown"
)
CANCELLED = "Cancelled by the client"


class RunnerLiveness(Protocol):
    """Is a task's runner still there? (`streams.liveness.Liveness`: key plus presence channel, so a
    SIGKILLed replica is seen dead at once, a paused one within the key's TTL, then fenced.)"""

    @property
    def replica_id(self) -> str: ...

    async def is_alive(self, replica_id: str) -> bool: ...


@dataclass(frozen=True)
class TaskSettings:
    ttl_ms: int
    poll_ms: int


@dataclass(frozen=True)
class Call:
    """One request of the stateless era, as the task surface needs it."""

    pool: str
    message: Message
    principal: str
    instance: Callable[[], str]  # picks a healthy upstream instance (only a task's runner needs one)
    headers: Mapping[str, str]  # the upstream headers of this request
    credentials: frozenset[str] = frozenset()  # lower-case names among them never stored in Redis


class TaskService:
    def __init__(
        self,
        *,
        tools: TaskTools,
        store: TaskStore,
        runner: Runner,
        liveness: RunnerLiveness,
        settings: TaskSettings,
        metrics: Metrics,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._tools = tools
        self._store = store
        self._runner = runner
        self._liveness = liveness
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._methods: Mapping[str, Callable[[TaskRecord, Mapping[str, Any]], Any]] = {
            "tasks/get": self._get,
            "tasks/cancel": self._cancel,
            "tasks/update": self._update,
        }

    def serves(self, pool: str) -> bool:
        return self._tools.serves(pool)

    async def intercept(self, call: Call) -> Mapping[str, Any] | None:
        """The JSON-RPC result the gateway answers itself, or None: forward to the upstream."""
        method = call.message.method or ""
        params = call.message.raw.get("params")
        params = params if isinstance(params, dict) else {}
        if not self.serves(call.pool):
            return None
        if method == "tools/call":
            return await self._tools_call(call, params)
        if not method.startswith("tasks/"):
            return None
        if method not in protocol.SERVED_METHODS:
            # tasks §Reservations: the prefix is the extension's; tasks/result and tasks/list are removed.
            raise errors.MethodNotFound(f"Method not found: {method}")
        if not protocol.negotiated(params):
            raise protocol.missing_capability(method)  # tasks §Protocol Errors: -32021
        record = await self._visible(params.get("taskId"), call)
        if record is None:
            raise protocol.unknown_task()
        result: Mapping[str, Any] = await self._methods[method](record, params)
        return result

    async def _tools_call(self, call: Call, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        name = params.get("name")
        support = self._tools.support(call.pool, name) if isinstance(name, str) else None
        if support is None:
            return None
        if not protocol.negotiated(params):
            if support is TaskSupport.REQUIRED:
                raise protocol.missing_capability(f"tool {name!r}")  # tasks §Capability Negotiation
            return None  # a plain synchronous call for a client without the extension
        if "inputResponses" not in params and self._tools.asks_first(call.pool, str(name)):
            # tasks §Task Creation: MRTR exchanges before the task are resolved synchronously.
            return None
        instance = call.instance()  # no healthy instance: 503 now, before any task exists
        now = self._clock()
        stored = {k: v for k, v in call.headers.items() if k.lower() not in call.credentials}
        record = TaskRecord(
            id=protocol.new_task_id(),
            status="working",
            principal=call.principal,
            pool=call.pool,
            tool=str(name),
            owner=self._liveness.replica_id,
            created=now,
            updated=now,
            ttl_ms=self._settings.ttl_ms,
            poll_ms=self._settings.poll_ms,
            call=json.dumps(params),
            headers=json.dumps(stored),
        )
        await self._store.create(record)  # tasks §Task Creation: durable before it is announced
        self._runner.start(Job(record.id, instance, call.headers, params, timeout=self._timeout(record)))
        self._metrics.tasks.labels("created").inc()
        log.info("task %s: %s on pool %s", record.id[:8], name, call.pool)
        return record.created_result()

    def _timeout(self, record: TaskRecord) -> float:
        """The upstream call may last until the task expires, not longer."""
        return max(0.001, (record.created + record.ttl_ms - self._clock()) / 1000)

    async def _visible(self, task_id: object, call: Call) -> TaskRecord | None:
        if not protocol.valid_task_id(task_id):
            return None
        record = await self._store.load(str(task_id))
        # tasks §Security Considerations (auth binding): another caller's task does not exist for it.
        if record is None or not hmac.compare_digest(record.principal, call.principal):
            return None
        if not record.terminal and record.owner and not await self._liveness.is_alive(record.owner):
            await self._take_over(record, call)
            record = await self._store.load(record.id)
        return record

    async def _take_over(self, record: TaskRecord, call: Call) -> None:
        """The runner replica is gone: carry the task on here if no call was open, else fail it."""
        dead, me = record.owner, self._liveness.replica_id
        if record.between_rounds:
            adopted = await self._store.transition(record.id, self._clock(), {"owner": me}, owner=dead)
            if adopted == APPLIED:
                log.warning("task %s: runner %s is gone; adopted between rounds", record.id[:8], dead)
                credentials = {k: v for k, v in call.headers.items() if k.lower() in call.credentials}
                headers = {**json.loads(record.headers), **credentials}
                job = Job(
                    record.id, call.instance(), headers, json.loads(record.call), self._timeout(record), record.round
                )
                self._runner.start(job)
                self._metrics.tasks.labels("adopted").inc()
            return
        log.warning("task %s: runner %s is gone mid-call; failing the task", record.id[:8], dead)
        error = {"code": errors.INTERNAL_ERROR, "message": ORPHAN_ERROR}
        fields = {"status": "failed", "error": json.dumps(error), "message": ORPHAN_ERROR}
        if await self._store.transition(record.id, self._clock(), fields, owner=dead, clear_inputs=True) == APPLIED:
            self._metrics.tasks.labels("orphaned").inc()

    async def _get(self, record: TaskRecord, params: Mapping[str, Any]) -> Mapping[str, Any]:
        return record.detailed()

    async def _cancel(self, record: TaskRecord, params: Mapping[str, Any]) -> Mapping[str, Any]:
        # tasks §Task Cancellation: acknowledged on any task; a terminal one stays as it is.
        fields = {"status": "cancelled", "message": CANCELLED}
        if await self._store.transition(record.id, self._clock(), fields, clear_inputs=True) == APPLIED:
            self._metrics.tasks.labels("cancelled").inc()
        return ACK

    async def _update(self, record: TaskRecord, params: Mapping[str, Any]) -> Mapping[str, Any]:
        responses = params.get("inputResponses")
        if not isinstance(responses, dict):
            raise errors.InvalidParams("Invalid params: inputResponses must be an object")
        # tasks §Task Update Requests: keys not outstanding are ignored, a subset is accepted.
        await self._store.answer(record.id, self._clock(), {str(k): json.dumps(v) for k, v in responses.items()})
        return ACK
