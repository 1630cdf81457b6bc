"""Conformance fixture tools that the suite's `tasks-*` scenarios name, as PLAIN tools: the fixture has no
tasks support at all (mcp 2.3.0 has none either). Direct, those scenarios fail; through a gateway that
serves them as tasks (`--task-tools`, see `TASK_TOOLS`) they pass.

Input is asked for the 2026-07-28 way: an InputRequiredResult (SEP-2322), answered by the next round's
`inputResponses`; the gateway turns each round into the task's `input_required` state. The harness
configures the gateway with `interop.harness.TASK_TOOLS`."""

import asyncio
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import InputRequiredResult

from interop.conformance_common import answered, elicit_request, elicited


def register_task_tools(server: MCPServer) -> None:
    @server.tool(description="Sync-only greeting (tasks-* scenarios)")
    def greet(name: str) -> str:
        return f"Hello, {name}!"

    @server.tool(description="Sleeps `seconds`, then answers (a task through the gateway)")
    async def slow_compute(seconds: float = 0, label: str = "") -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            # tests/integration/test_tasks.py looks for this line: the upstream call was cancelled
            print(f"slow_compute cancelled: {label}", file=sys.stderr, flush=True)
            raise
        return f"computed {label or 'result'} after {seconds}s"

    @server.tool(description="Fails with a tool execution error after ~1 s (isError: true)")
    async def failing_job() -> str:
        await asyncio.sleep(1)
        raise RuntimeError("failing_job always fails")

    @server.tool(description="Fails with a JSON-RPC (protocol) error after ~1 s")
    async def protocol_error_job() -> str:
        await asyncio.sleep(1)
        raise MCPError(code=-32603, message="protocol_error_job: internal failure")

    @server.tool(description="Asks for confirmation (InputRequiredResult), then deletes")
    async def confirm_delete(filename: str, ctx: Context) -> str | InputRequiredResult:
        if not answered(ctx, ["confirm"]):
            ask = elicit_request(f"Delete {filename}?", {"confirm": {"type": "boolean"}}, ["confirm"])
            return InputRequiredResult(input_requests={"confirm": ask})
        return f"deleted {filename}" if elicited(ctx, "confirm").get("confirm") else f"kept {filename}"

    @server.tool(description="Asks for two inputs at once (InputRequiredResult with two requests)")
    async def multi_input(ctx: Context) -> str | InputRequiredResult:
        if not answered(ctx, ["name", "confirm"]):
            return InputRequiredResult(
                input_requests={
                    "name": elicit_request("Your name?", {"name": {"type": "string"}}, ["name"]),
                    "confirm": elicit_request("Proceed?", {"confirm": {"type": "boolean"}}, ["confirm"]),
                }
            )
        return f"hello {elicited(ctx, 'name').get('name', '')}, confirmed"

    @server.tool(description="Asks for user_name (InputRequiredResult), then greets")
    async def test_tool_with_task(ctx: Context) -> str | InputRequiredResult:
        if not answered(ctx, ["user_name"]):
            ask = elicit_request("What is your name?", {"name": {"type": "string"}}, ["name"])
            return InputRequiredResult(input_requests={"user_name": ask})
        return f"Hello, {elicited(ctx, 'user_name').get('name', '')}!"
