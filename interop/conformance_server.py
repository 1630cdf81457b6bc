"""Fixture server for `@modelcontextprotocol/conformance` server scenarios, on the Python SDK (mcp 2.3.0).

    .venv/bin/python interop/conformance_server.py --port P [--host 127.0.0.1]

Serves Streamable HTTP at `/mcp` (both eras: the dated 2025 revisions with sessions, and the
stateless 2026-07-28 revision, which the SDK dispatches by `MCP-Protocol-Version`) and `GET /healthz`.

Names, arguments and answers follow the "Server Implementation Requirements" that each server
scenario of the suite carries in its description (`conformance list --server`; the text lives in
`interop/node_modules/@modelcontextprotocol/conformance/dist/index.js`). DNS-rebinding protection
stays ON for localhost Host/Origin values on any port (the `dns-rebinding-protection` scenario
checks it); `--allow-host` adds Host values a proxy may forward. The SSE event store makes
`test_reconnection` (`server-sse-polling`) resumable.
"""

# No `from __future__ import annotations`: the SDK evaluates tool annotations that name local resolvers.
import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (
    AudioContent,
    Completion,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    ListRootsRequest,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "servers"))
from event_store import InMemoryEventStore  # type: ignore[import-not-found]

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def _elicit(message: str, properties: dict[str, Any], required: Sequence[str] = ()) -> ElicitRequest:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=_text(text))], max_tokens=max_tokens
        )
    )


def _answered(ctx: Context, keys: Sequence[str]) -> bool:
    responses = ctx.input_responses or {}
    return all(k in responses for k in keys)


def _elicited(ctx: Context, key: str) -> dict[str, Any]:
    answer = (ctx.input_responses or {}).get(key)
    return dict(answer.content or {}) if isinstance(answer, ElicitResult) else {}


def _ask_sampling(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=_text(prompt))], max_tokens=100)


def build_server() -> MCPServer:
    server: MCPServer = MCPServer(
        name="mcp-conformance-test-server",
        version="1.0.0",
        log_level="WARNING",
        cache_hints={
            m: CacheHint(ttl_ms=0, scope="private")
            for m in ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read")
        },
    )
    subscriptions: set[str] = set()

    # ------------------------------------------------------------------ content tools
    @server.tool(description="Tests simple text content response")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Tests image content response")
    def test_image_content() -> list[ImageContent]:
        return [ImageContent(type="image", data=PNG, mime_type="image/png")]

    @server.tool(description="Tests audio content response")
    def test_audio_content() -> list[AudioContent]:
        return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    @server.tool(description="Tests embedded resource content response")
    def test_embedded_resource() -> list[EmbeddedResource]:
        res = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return [EmbeddedResource(type="resource", resource=res)]

    @server.tool(description="Tests response with multiple content types (text, image, resource)")
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        res = TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json", text='{"test":"data","value":123}'
        )
        return [
            _text("Multiple content types test:"),
            ImageContent(type="image", data=PNG, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=res),
        ]

    @server.tool(description="Tests error response handling")
    def test_error_handling() -> str:
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool(description="Tool with JSON Schema 2020-12 features")
    def json_schema_2020_12_tool() -> str:
        return "ok"

    # The listing must carry the 2020-12 schema verbatim (the generated one would be `{}`).
    tool = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert tool is not None
    tool.parameters = JSON_SCHEMA_2020_12

    @server.tool(description="Echoes `region`, which also travels as the Mcp-Param-Region header (SEP-2243)")
    def test_custom_headers(region: str) -> str:
        return f"region={region}"

    tool = server._tool_manager.get_tool("test_custom_headers")
    assert tool is not None
    tool.parameters = {
        "type": "object",
        "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
        "required": ["region"],
    }

    # ------------------------------------------------------------------ notifications during a call
    @server.tool(description="Tests tool that emits log messages during execution")
    async def test_tool_with_logging(ctx: Context) -> str:
        for i, text in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if i:
                await asyncio.sleep(0.05)
            await ctx.info(text)
        return "Tool with logging executed successfully"

    @server.tool(description="Tests tool that reports progress notifications")
    async def test_tool_with_progress(ctx: Context) -> str:
        for i, p in enumerate((0, 50, 100)):
            if i:
                await asyncio.sleep(0.05)
            await ctx.report_progress(p, 100, f"Completed step {p} of 100")
        return "Progress test completed"

    @server.tool(description="Emits a log message (only sent when the client asked for a log level)")
    async def test_logging_tool(ctx: Context) -> str:
        await ctx.info("test_logging_tool log message")
        return "logged"

    @server.tool(description="Tests SSE polling by closing the stream mid-call (SEP-1699)")
    async def test_reconnection(ctx: Context) -> str:
        await ctx.info("Before disconnect")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        await ctx.info("After reconnect")
        return "Reconnection test completed"

    # ------------------------------------------------------------------ server -> client requests (dated eras)
    @server.tool(description="Tests server-initiated sampling (LLM completion request)")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            [SamplingMessage(role="user", content=_text(prompt))], max_tokens=100, related_request_id=ctx.request_id
        )
        content = result.content
        text = content.text if isinstance(content, TextContent) else "No response"
        return f"LLM response: {text}"

    @server.tool(description="Tests server-initiated elicitation (user input request)")
    async def test_elicitation(message: str, ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return f"User response: action={result.action}, content={json.dumps(result.content or {})}"

    @server.tool(description="Tests elicitation with default values for all primitive types (SEP-1034)")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verification status", "default": True},
            },
        }
        result = await ctx.session.elicit_form(
            "Please provide user information", schema, related_request_id=ctx.request_id
        )
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"

    @server.tool(description="Tests elicitation with enum schema variations (SEP-1330)")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {
                    "type": "string",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
        }
        result = await ctx.session.elicit_form(
            "Please select values using different enum schema types", schema, related_request_id=ctx.request_id
        )
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"

    # ------------------------------------------------------------------ 2026-07-28: InputRequiredResult (SEP-2322)
    async def ask_sampling(ctx: Context) -> Sample:
        return _ask_sampling("capability probe")

    @server.tool(description="Needs the client's sampling capability (-32021 when undeclared)")
    async def test_missing_capability(answer: Annotated[CreateMessageResult, Resolve(ask_sampling)]) -> str:
        return "sampled"

    user_name = {"user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])}

    @server.tool(description="InputRequiredResult with one elicitation (SEP-2322)")
    async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
        if not _answered(ctx, ["user_name"]):
            return InputRequiredResult(input_requests=user_name)
        return f"Hello, {_elicited(ctx, 'user_name').get('name', '')}!"

    @server.tool(description="InputRequiredResult with one sampling request (SEP-2322)")
    async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
        if not _answered(ctx, ["capital_question"]):
            return InputRequiredResult(
                input_requests={"capital_question": _sample("What is the capital of France?", 100)}
            )
        return "sampling answered"

    @server.tool(description="InputRequiredResult with one roots/list request (SEP-2322)")
    async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
        if not _answered(ctx, ["client_roots"]):
            return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})
        return "roots answered"

    @server.tool(description="InputRequiredResult with requestState round trip (SEP-2322)")
    async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
        if not _answered(ctx, ["confirm"]) or ctx.request_state != "round-1":
            confirm = _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
            return InputRequiredResult(input_requests={"confirm": confirm}, request_state="round-1")
        return "state-ok: confirmed"

    @server.tool(description="InputRequiredResult with several input requests (SEP-2322)")
    async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
        keys = ["user_name", "greeting", "client_roots"]
        if not _answered(ctx, keys) or ctx.request_state != "multi":
            requests: dict[str, InputRequest] = {
                **user_name,
                "greeting": _sample("Generate a greeting", 50),
                "client_roots": ListRootsRequest(),
            }
            return InputRequiredResult(input_requests=requests, request_state="multi")
        return "all inputs received"

    @server.tool(description="Multi-round InputRequiredResult (SEP-2322)")
    async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
        if ctx.request_state == "round-2" and _answered(ctx, ["step2"]):
            return f"done: color={_elicited(ctx, 'step2').get('color', '')}"
        if ctx.request_state == "round-1" and _answered(ctx, ["step1"]):
            step2 = _elicit("Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"])
            return InputRequiredResult(input_requests={"step2": step2}, request_state="round-2")
        step1 = _elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
        return InputRequiredResult(input_requests={"step1": step1}, request_state="round-1")

    @server.tool(description="InputRequiredResult with integrity-protected requestState (SEP-2322)")
    async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
        # The SDK's RequestStateBoundary seals every requestState (AES-GCM) and rejects a tampered echo.
        if ctx.request_state != "sealed" or not _answered(ctx, ["confirm"]):
            confirm = _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
            return InputRequiredResult(input_requests={"confirm": confirm}, request_state="sealed")
        return "state verified"

    @server.tool(description="Only asks for inputs whose capability the client declared (SEP-2322)")
    async def test_input_required_result_capabilities(ctx: Context) -> str | InputRequiredResult:
        caps = ctx.client_capabilities
        requests: dict[str, InputRequest] = {}
        if caps is not None and caps.elicitation is not None:
            requests.update(user_name)
        if caps is not None and caps.sampling is not None:
            requests["capital_question"] = _sample("What is the capital of France?", 100)
        if caps is not None and caps.roots is not None:
            requests["client_roots"] = ListRootsRequest()
        if not requests or _answered(ctx, list(requests)):
            return "capabilities respected"
        return InputRequiredResult(input_requests=requests)

    # ------------------------------------------------------------------ resources
    @server.resource("test://static-text", mime_type="text/plain", description="A static text resource")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png", description="A static binary resource")
    def static_binary() -> bytes:
        return base64.b64decode(PNG)

    @server.resource("test://template/{id}/data", mime_type="application/json", description="A resource template")
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))

    @server.resource("test://watched-resource", mime_type="text/plain", description="A subscribable resource")
    def watched() -> str:
        return "Watched resource content"

    async def on_subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def on_unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    low = server._lowlevel_server
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, on_subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, on_unsubscribe)

    async def on_set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()  # dated eras: accepted; the SDK filters per-request log levels itself

    low.add_request_handler("logging/setLevel", SetLevelRequestParams, on_set_level)

    # ------------------------------------------------------------------ prompts and completion
    @server.prompt(description="A simple prompt without arguments")
    def test_simple_prompt() -> list[dict[str, Any]]:
        return [{"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}]

    @server.prompt(description="A prompt with required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[dict[str, Any]]:
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [{"role": "user", "content": {"type": "text", "text": text}}]

    @server.prompt(description="A prompt that includes an embedded resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[dict[str, Any]]:
        resource = {"uri": resourceUri, "mimeType": "text/plain", "text": "Embedded resource content for testing."}
        return [
            {"role": "user", "content": {"type": "resource", "resource": resource}},
            {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}},
        ]

    @server.prompt(description="A prompt that includes image content")
    def test_prompt_with_image() -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}},
        ]

    @server.prompt(description="A prompt that needs elicitation input first (SEP-2322)")
    def test_input_required_result_prompt(ctx: Context) -> list[dict[str, Any]] | InputRequiredResult:
        if not _answered(ctx, ["user_context"]):
            ask = _elicit("What context should the prompt use?", {"context": {"type": "string"}}, ["context"])
            return InputRequiredResult(input_requests={"user_context": ask})
        text = f"Prompt context: {_elicited(ctx, 'user_context').get('context', '')}"
        return [{"role": "user", "content": {"type": "text", "text": text}}]

    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion:
        candidates = ["paris", "park", "party"] if argument.name == "arg1" else []
        values = [v for v in candidates if v.startswith(argument.value or "")]
        return Completion(values=values, total=len(values), has_more=False)

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return server


def trim_ows(app: Any) -> Any:
    """RFC 9110 §5.5: whitespace around a field value is not part of it. mcp 2.3.0 compares
    `Mcp-Name`/`Mcp-Method` untrimmed (the conformance check `sep-2243-server-accepts-whitespace-
    header-value` fails against the bare SDK); the fixture trims before the SDK sees the request."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [(k, v.strip(b" \t")) for k, v in scope["headers"]]}
        await app(scope, receive, send)

    return wrapped


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--allow-host", action="append", default=[], help="extra allowed Host header value")
    args = p.parse_args(argv)
    server = build_server()
    local = [f"{h}:*" for h in ("127.0.0.1", "localhost", "[::1]")]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*local, *args.allow_host],
        allowed_origins=[f"http://{h}" for h in local],
    )
    app = server.streamable_http_app(
        event_store=InMemoryEventStore(), retry_interval=100, transport_security=security, host=args.host
    )
    uvicorn.run(trim_ows(app), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
