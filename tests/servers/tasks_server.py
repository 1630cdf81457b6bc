"""A 2026-07-28 upstream that implements the tasks extension itself, in memory (so a task exists on
the instance that created it only), for the gateway's pass-through tests.

    python tests/servers/tasks_server.py --port P --name NAME [--sse]

`server/discover` advertises the extension; `tools/call` of `work` from a client that declared it
answers a CreateTaskResult whose task completes at once with "done by NAME"; `tasks/get` and
`tasks/cancel` know this instance's tasks only (-32602 otherwise). `--sse` answers as SSE. `GET /healthz`.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

EXT = "io.modelcontextprotocol/tasks"
STAMP = "2026-01-01T00:00:00.000Z"


def build(name: str, sse: bool) -> Starlette:
    tasks: dict[str, str] = {}

    def task(task_id: str, status: str) -> dict[str, Any]:
        return {"taskId": task_id, "status": status, "createdAt": STAMP, "lastUpdatedAt": STAMP, "ttlMs": 60000}

    def answer(message: dict[str, Any]) -> dict[str, Any]:
        method, params = message.get("method"), message.get("params") or {}
        declared = EXT in (
            ((params.get("_meta") or {}).get("io.modelcontextprotocol/clientCapabilities") or {}).get("extensions")
            or {}
        )
        if method == "server/discover":
            caps: dict[str, Any] = {"tools": {}, "extensions": {EXT: {}}}
            return {"resultType": "complete", "supportedVersions": ["2026-07-28"], "capabilities": caps}
        if method == "tools/call" and declared:
            task_id = uuid.uuid4().hex
            tasks[task_id] = "completed"
            return {"resultType": "task", **task(task_id, "working")}
        if method == "tools/call":
            return {"resultType": "complete", "content": [{"type": "text", "text": f"sync by {name}"}]}
        if method in ("tasks/get", "tasks/cancel") and params.get("taskId") in tasks:
            if method == "tasks/cancel":
                return {"resultType": "complete"}
            done = {"content": [{"type": "text", "text": f"done by {name}"}], "isError": False}
            return {"resultType": "complete", **task(params["taskId"], "completed"), "result": done}
        raise LookupError(method)

    async def mcp(request: Request) -> Response:
        message = json.loads(await request.body())
        try:
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": answer(message)}
        except LookupError:
            reply = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32602, "message": "Task not found"}}
        if sse:
            return Response(f"event: message\ndata: {json.dumps(reply)}\n\n", media_type="text/event-stream")
        return JSONResponse(reply)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/mcp", mcp, methods=["POST"]), Route("/healthz", healthz)])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="t1")
    p.add_argument("--sse", action="store_true")
    args = p.parse_args(argv)
    uvicorn.run(build(args.name, args.sse), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
