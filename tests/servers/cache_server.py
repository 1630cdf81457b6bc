"""A 2026-07-28 upstream whose lists and reads carry `ttlMs`/`cacheScope` (SEP-2549), counting how
often it answers each one, and announcing changes on `subscriptions/listen` streams.

    python tests/servers/cache_server.py --port P [--ttl-ms 60000] [--sse]

* `tools/list`, `prompts/list`, `resources/list`, `server/discover`: public, `--ttl-ms`; the tool and
  prompt names carry a version that `POST /change?kind=tools|prompts|resources` raises.
* `resources/read`: `file:///...` public, `private:///...` private (the text names the caller's
  `Authorization`), `short:///...` public with ttlMs 300, `missing:///...` a JSON-RPC error; the text
  carries the URI's version, raised by `POST /change?kind=updated&uri=URI` (`&quiet=1`: unannounced).
* `subscriptions/listen`: an SSE stream, acknowledged, then the notifications its filter asked for.
* `GET /counts`: answers given per method (`resources/read` per URI); `GET /listeners`: open listen
  streams and the resources each one subscribed to; `GET /healthz`. `--sse` answers every request as SSE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

SUB_ID = "io.modelcontextprotocol/subscriptionId"
KIND_TO_NOTE = {
    "tools": ("notifications/tools/list_changed", "toolsListChanged"),
    "prompts": ("notifications/prompts/list_changed", "promptsListChanged"),
    "resources": ("notifications/resources/list_changed", "resourcesListChanged"),
}


def build(ttl_ms: int, sse: bool) -> Starlette:
    counts: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    listeners: list[tuple[dict[str, Any], asyncio.Queue[dict[str, Any]]]] = []

    def cacheable(result: dict[str, Any], scope: str = "public", ttl: int = ttl_ms) -> dict[str, Any]:
        return {"resultType": "complete", **result, "ttlMs": ttl, "cacheScope": scope}

    def answer(method: str, params: dict[str, Any], auth: str) -> dict[str, Any]:
        if method == "server/discover":
            caps = {name: {"listChanged": True} for name in ("tools", "prompts", "resources")}
            return cacheable({"supportedVersions": ["2026-07-28"], "capabilities": caps})
        if method == "tools/list":
            schema = {"type": "object"}
            return cacheable({"tools": [{"name": f"tool-v{versions['tools']}", "inputSchema": schema}]})
        if method == "prompts/list":
            return cacheable({"prompts": [{"name": f"prompt-v{versions['prompts']}"}]})
        if method == "resources/list":
            return cacheable({"resources": [{"uri": "file:///a", "name": f"a-v{versions['resources']}"}]})
        if method == "resources/read":
            uri = str(params.get("uri"))
            if uri.startswith("missing:"):
                raise LookupError(uri)
            text = f"{uri} v{versions['read:' + uri]}"
            contents = {"contents": [{"uri": uri, "text": text}]}
            if uri.startswith("private:"):
                return cacheable({"contents": [{"uri": uri, "text": f"{text} for {auth}"}]}, "private")
            return cacheable(contents, ttl=300 if uri.startswith("short:") else ttl_ms)
        if method == "tools/call":
            return {"resultType": "complete", "content": [{"type": "text", "text": "called"}]}
        raise LookupError(method)

    async def listen(request_id: Any, wanted: dict[str, Any]) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        entry = (wanted, queue)
        listeners.append(entry)
        ack = {"method": "notifications/subscriptions/acknowledged", "params": {"notifications": wanted}}
        try:
            note: dict[str, Any] = ack
            while True:
                note["params"] = {**note.get("params", {}), "_meta": {SUB_ID: request_id}}
                yield f"event: message\ndata: {json.dumps({'jsonrpc': '2.0', **note})}\n\n".encode()
                try:
                    note = await asyncio.wait_for(queue.get(), timeout=5)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    note = await queue.get()
        finally:
            listeners.remove(entry)

    async def mcp(request: Request) -> Response:
        message = json.loads(await request.body())
        method, params = message.get("method"), message.get("params") or {}
        if "id" not in message:
            return Response(status_code=202)
        if method == "subscriptions/listen":
            counts[method] += 1
            stream = listen(message["id"], params.get("notifications") or {})
            return StreamingResponse(stream, media_type="text/event-stream")
        key = f"read:{params.get('uri')}" if method == "resources/read" else str(method)
        counts[key] += 1
        try:
            found = answer(method, params, request.headers.get("authorization", "-"))
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": found}
        except LookupError as exc:
            reply = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32602, "message": f"Unknown: {exc}"}}
        if sse:
            return Response(f"event: message\ndata: {json.dumps(reply)}\n\n", media_type="text/event-stream")
        return JSONResponse(reply)

    async def change(request: Request) -> Response:
        kind = request.query_params["kind"]
        if kind == "updated":
            uri = request.query_params["uri"]
            versions[f"read:{uri}"] += 1
            note = {"method": "notifications/resources/updated", "params": {"uri": uri}}
            targets = [q for wanted, q in listeners if uri in (wanted.get("resourceSubscriptions") or [])]
        else:
            versions[kind] += 1
            method, flag = KIND_TO_NOTE[kind]
            note = {"method": method}
            targets = [q for wanted, q in listeners if wanted.get(flag)]
        if request.query_params.get("quiet"):
            targets = []  # a change the server does not announce (ttlMs alone covers it)
        for queue in targets:
            queue.put_nowait(dict(note))
        return JSONResponse({"notified": len(targets)})

    async def counts_endpoint(request: Request) -> Response:
        return JSONResponse(dict(counts))

    async def listeners_endpoint(request: Request) -> Response:
        subscribed = [sorted(wanted.get("resourceSubscriptions") or []) for wanted, _ in listeners]
        return JSONResponse({"listeners": len(listeners), "subscriptions": subscribed})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/mcp", mcp, methods=["POST"]),
            Route("/change", change, methods=["POST"]),
            Route("/counts", counts_endpoint),
            Route("/listeners", listeners_endpoint),
            Route("/healthz", healthz),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ttl-ms", type=int, default=60_000)
    p.add_argument("--sse", action="store_true")
    args = p.parse_args(argv)
    uvicorn.run(build(args.ttl_ms, args.sse), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
