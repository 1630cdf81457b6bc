"""One task as the gateway keeps it, and its wire shapes (ext-tasks §Tasks, §Task Polling)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.tasks.protocol import INLINED, TERMINAL, iso

INPUT_PREFIX = "in:"  # hash field per outstanding input request: in:<key> -> JSON of the request
ANSWER_PREFIX = "ans:"  # hash field per collected input response: ans:<key> -> JSON of the response


@dataclass(frozen=True)
class TaskRecord:
    id: str
    status: str
    principal: str
    pool: str
    tool: str
    owner: str  # replica id of the runner
    created: int  # ms since the epoch
    updated: int
    ttl_ms: int
    poll_ms: int
    message: str = ""
    result: str | None = None  # JSON of the tool's result (completed)
    error: str | None = None  # JSON of the JSON-RPC error (failed)
    state: str | None = None  # the upstream's MRTR requestState, echoed on the next round
    round: int = 0  # MRTR rounds so far; prefixes input keys so each is unique in the task
    call: str = "{}"  # JSON of the client's tools/call params: another replica can send the next round
    headers: str = "{}"  # JSON of the upstream headers without credentials (those come with each request)
    inputs: Mapping[str, str] = field(default_factory=dict)
    answers: Mapping[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def between_rounds(self) -> bool:
        """No upstream call is open: the task waits for input, or has all of it and the next round
        is not sent yet (the runner drops the answers just before it sends them). Another replica
        can then carry the task on without losing or repeating anything."""
        return self.status == "input_required" or (self.status == "working" and bool(self.answers) and not self.inputs)

    def to_redis(self) -> dict[str, str]:
        fields = {
            "status": self.status,
            "principal": self.principal,
            "pool": self.pool,
            "tool": self.tool,
            "owner": self.owner,
            "created": str(self.created),
            "updated": str(self.updated),
            "ttl": str(self.ttl_ms),
            "poll": str(self.poll_ms),
            "message": self.message,
            "round": str(self.round),
            "call": self.call,
            "headers": self.headers,
        }
        return fields

    @classmethod
    def from_redis(cls, task_id: str, raw: Mapping[bytes, bytes]) -> TaskRecord:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=task_id,
            status=f["status"],
            principal=f.get("principal", ""),
            pool=f.get("pool", ""),
            tool=f.get("tool", ""),
            owner=f.get("owner", ""),
            created=int(f.get("created", "0")),
            updated=int(f.get("updated", "0")),
            ttl_ms=int(f.get("ttl", "0")),
            poll_ms=int(f.get("poll", "1000")),
            message=f.get("message", ""),
            result=f.get("result"),
            error=f.get("error"),
            state=f.get("state") or None,
            round=int(f.get("round", "0")),
            call=f.get("call", "{}"),
            headers=f.get("headers", "{}"),
            inputs={k.removeprefix(INPUT_PREFIX): v for k, v in f.items() if k.startswith(INPUT_PREFIX)},
            answers={k.removeprefix(ANSWER_PREFIX): v for k, v in f.items() if k.startswith(ANSWER_PREFIX)},
        )

    def task(self) -> dict[str, Any]:
        """The `Task` fields (tasks §Tasks): flat, integer milliseconds, no v1 `ttl`/`pollInterval`."""
        out: dict[str, Any] = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": iso(self.created),
            "lastUpdatedAt": iso(self.updated),
            "ttlMs": self.ttl_ms,
            "pollIntervalMs": self.poll_ms,
        }
        if self.message:
            out["statusMessage"] = self.message
        return out

    def created_result(self) -> dict[str, Any]:
        """tasks §Task Creation: CreateTaskResult = Result & Task, `resultType: "task"`."""
        return {"resultType": "task", **self.task()}

    def detailed(self) -> dict[str, Any]:
        """tasks §Task Polling: GetTaskResult = Result & DetailedTask, `resultType: "complete"`."""
        out = {"resultType": "complete", **self.task()}
        inlined = INLINED.get(self.status)
        payload = self.result if inlined == "result" else self.error
        if inlined and payload is not None:
            out[inlined] = json.loads(payload)
        if self.status == "input_required":
            out["inputRequests"] = {k: json.loads(v) for k, v in self.inputs.items()}
        return out
