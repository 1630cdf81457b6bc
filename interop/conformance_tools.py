"""Conformance fixture tools: content types, errors, schemas, and notifications sent during a call."""

import asyncio

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import AudioContent, EmbeddedResource, ImageContent, TextContent, TextResourceContents

from interop.conformance_common import JSON_SCHEMA_2020_12, PNG, WAV, text_content


def register_content_tools(server: MCPServer) -> None:
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
            text_content("Multiple content types test:"),
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


def register_notification_tools(server: MCPServer) -> None:
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
