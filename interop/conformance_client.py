"""Client under test for `@modelcontextprotocol/conformance` client scenarios, on the Python SDK (mcp 2.3.0).

    .venv/bin/python interop/conformance_client.py <server-url>

The suite starts one test server per scenario and runs this script with the server URL as the last
argument. It reads three environment variables:

- `MCP_CONFORMANCE_SCENARIO`: the scenario to play (dispatched through `SCENARIOS`; an unknown name
  exits with status 2).
- `MCP_CONFORMANCE_PROTOCOL_VERSION`: picks the lifecycle. The dated revisions (up to 2025-11-25)
  use the initialize handshake (`Client(mode="legacy")`). 2026-07-28 is stateless: `mode="auto"`
  probes `server/discover` (retrying once at a version the server names if it answers -32022
  UnsupportedProtocolVersion, SEP-2575), and every later request carries its own `_meta` and the
  `MCP-Protocol-Version`/`Mcp-Method`/`Mcp-Name`/`Mcp-Param-*` headers. If the server makes "auto"
  fall back to the handshake, the run fails instead of going on in the wrong lifecycle.
- `MCP_CONFORMANCE_CONTEXT`: scenario data as JSON. Its `toolCalls` steps (`[{name, arguments}]`)
  are run in order after `tools/list`.

Everything on the wire goes through the SDK client (`mcp.Client`): no raw HTTP. Two behaviours are
this script's own because the SDK leaves them to the application: elicitation forms are answered
with the defaults the server supplied (SEP-1034; the SDK passes the form to a callback and does
not fill it in), and, for `sep-2322-client-request-state`, the first input-required exchange is
driven by hand so that an unrelated call can be made while it is still open.

Offered version: the SDK's `Client` always offers its newest handshake revision (2025-11-25) in
`initialize` and accepts whatever the server picks, as the spec says a client SHOULD. So a run at
2025-06-18 still offers 2025-11-25, and it negotiates 2025-06-18 only if the server counter-offers it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
from mcp import Client
from mcp.client import ClientRequestContext
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

logger = logging.getLogger("conformance-client")

CLIENT_INFO = types.Implementation(name="mcp-gateway-conformance-client", version="1.0.0")

Context = dict[str, Any]
Scenario = Callable[[Client, Context], Awaitable[None]]


# ---------------------------------------------------------------------------------------------- helpers


def form_defaults(requested_schema: dict[str, Any]) -> dict[str, Any]:
    """The values a form pre-fills: each top-level property's `default`, where the server gave one."""
    properties: dict[str, Any] = requested_schema.get("properties") or {}
    return {name: prop["default"] for name, prop in properties.items() if isinstance(prop, dict) and "default" in prop}


def answer_form(params: types.ElicitRequestParams) -> types.ElicitResult:
    """The user accepts a form as presented, so each field keeps its default (SEP-1034), and declines
    URL-mode elicitations (there is no browser to open here)."""
    if isinstance(params, types.ElicitRequestFormParams):
        return types.ElicitResult(action="accept", content=form_defaults(params.requested_schema))
    return types.ElicitResult(action="decline")


async def on_elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    """`elicitation_callback` for both eras: a request over SSE (dated revisions) or an input request
    inside an `InputRequiredResult` (2026-07-28, answered by the SDK's SEP-2322 driver)."""
    logger.info("elicitation: %s", params.message)
    return answer_form(params)


def sample_arguments(input_schema: dict[str, Any]) -> dict[str, Any]:
    """Placeholder values, by JSON Schema type, for the arguments a tool's input schema requires."""
    samples: dict[str, Any] = {"string": "sample", "integer": 1, "number": 1.5, "boolean": True}
    properties: dict[str, Any] = input_schema.get("properties") or {}
    required: list[str] = input_schema.get("required") or []
    return {name: samples.get(str((properties.get(name) or {}).get("type")), "sample") for name in required}


def lifecycle_mode(version: str) -> str | None:
    """The SDK `Client` mode for a protocol version, or None for a version this client does not speak."""
    if version in MODERN_PROTOCOL_VERSIONS:
        return "auto"  # server/discover (with the -32022 retry), then per-request _meta: stateless
    if version in HANDSHAKE_PROTOCOL_VERSIONS:
        return "legacy"  # the initialize handshake
    return None


@asynccontextmanager
async def connect(url: str, version: str, mode: str) -> AsyncIterator[Client]:
    async with Client(url, mode=mode, client_info=CLIENT_INFO, elicitation_callback=on_elicit) as client:
        logger.info("connected: protocol %s (%s lifecycle)", client.protocol_version, mode)
        if mode == "auto" and client.protocol_version != version:
            raise RuntimeError(f"asked for stateless {version}, the server negotiated {client.protocol_version}")
        yield client


async def list_tools(client: Client) -> list[types.Tool]:
    """Every tool, across pages. On 2026-07-28 the SDK drops tools whose `x-mcp-header` annotations
    are invalid and remembers the rest's annotations, which it mirrors into `Mcp-Param-*` headers."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        if (cursor := page.next_cursor) is None:
            return tools


def text_of(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def call(client: Client, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    result = await client.call_tool(name, arguments)
    logger.info("tools/call %s -> %s%s", name, "error: " if result.is_error else "", text_of(result))
    return result


# -------------------------------------------------------------------------------------------- scenarios


async def run_initialize(client: Client, context: Context) -> None:
    await list_tools(client)


async def run_tools_call(client: Client, context: Context) -> None:
    tools = {tool.name: tool for tool in await list_tools(client)}
    if "add_numbers" not in tools:
        raise RuntimeError(f"add_numbers not listed (got {sorted(tools)})")
    await call(client, "add_numbers", {"a": 2, "b": 3})


async def run_elicitation_defaults(client: Client, context: Context) -> None:
    await list_tools(client)
    await call(client, "test_client_elicitation_defaults", {})  # the server elicits; `on_elicit` answers


async def run_sse_retry(client: Client, context: Context) -> None:
    # The server closes the tools/call SSE stream after a priming event (`id`, `retry: 500`); the SDK
    # waits `retry` ms, resumes with a GET carrying Last-Event-ID, and gets the result on that stream.
    await list_tools(client)
    await call(client, "test_reconnection", {})


async def run_list_tools_only(client: Client, context: Context) -> None:
    await list_tools(client)


async def run_json_schema_preservation(client: Client, context: Context) -> None:
    tools = {tool.name: tool for tool in await list_tools(client)}
    focal = tools.get("json_schema_2020_12_tool")
    if focal is None:
        raise RuntimeError(f"json_schema_2020_12_tool not listed (got {sorted(tools)})")
    await call(client, "json_schema_echo", {"schema": focal.input_schema})  # the schema exactly as received


async def run_request_state(client: Client, context: Context) -> None:
    """SEP-2322: echo `requestState` untouched, never invent one, keep each exchange to itself."""
    await list_tools(client)
    # Driven by hand so that a call can be made while this exchange is open; the resumption itself
    # goes through `Client.call_tool`'s seeded-call support.
    first = await client.session.call_tool("test_mrtr_echo_state", {}, allow_input_required=True)
    if isinstance(first, types.InputRequiredResult):
        await call(client, "test_mrtr_unrelated", {})  # must carry neither inputResponses nor requestState
        responses: types.InputResponses = {
            key: answer_form(request.params)
            for key, request in (first.input_requests or {}).items()
            if isinstance(request, types.ElicitRequest)
        }
        result = await client.call_tool(
            "test_mrtr_echo_state", {}, input_responses=responses, request_state=first.request_state
        )
        logger.info("tools/call test_mrtr_echo_state (resumed) -> %s", text_of(result))
    else:
        logger.warning("test_mrtr_echo_state completed without asking for input")
    await call(client, "test_mrtr_no_state", {})  # the SDK's own driver: no requestState to echo
    # A result without `resultType` is complete (SEP-2322). mcp 2.3.0 cannot take it: it checks
    # 2026-07-28 results against that revision's schema, where `resultType` is required, and raises a
    # pydantic ValidationError. It does not retry, so the suite's check passes, but the run exits 1.
    await call(client, "test_mrtr_no_result_type", {})


async def run_exercise_all(client: Client, context: Context) -> None:
    """Every listed tool, resource and prompt, once each (the server's advertised features only)."""
    capabilities = client.server_capabilities
    for tool in await list_tools(client):
        await call(client, tool.name, sample_arguments(tool.input_schema))
    if capabilities.resources is not None:
        for resource in (await client.list_resources()).resources:
            await client.read_resource(resource.uri)
            logger.info("resources/read %s", resource.uri)
    if capabilities.prompts is not None:
        for prompt in (await client.list_prompts()).prompts:
            await client.get_prompt(prompt.name)
            logger.info("prompts/get %s", prompt.name)


async def run_context_tool_calls(client: Client, context: Context) -> None:
    """The `toolCalls` steps of MCP_CONFORMANCE_CONTEXT, after listing (which teaches the SDK the
    tools' `x-mcp-header` annotations)."""
    steps: list[dict[str, Any]] = context.get("toolCalls") or []
    if not steps:
        raise RuntimeError("MCP_CONFORMANCE_CONTEXT has no toolCalls")
    listed = {tool.name for tool in await list_tools(client)}
    for step in steps:
        if step["name"] not in listed:
            raise RuntimeError(f"context names tool {step['name']!r}, which the server did not list")
        await call(client, step["name"], step.get("arguments") or {})


SCENARIOS: dict[str, Scenario] = {
    "initialize": run_initialize,
    "tools_call": run_tools_call,
    "elicitation-sep1034-client-defaults": run_elicitation_defaults,
    "sse-retry": run_sse_retry,
    "request-metadata": run_list_tools_only,
    "sep-2322-client-request-state": run_request_state,
    "http-standard-headers": run_exercise_all,
    "http-custom-headers": run_context_tool_calls,
    "http-invalid-tool-headers": run_exercise_all,
    "json-schema-ref-no-deref": run_list_tools_only,
    "json-schema-2020-12-preservation": run_json_schema_preservation,
}


async def run(url: str, scenario: Scenario, version: str, mode: str, context: Context) -> None:
    async with connect(url, version, mode) as client:
        await scenario(client, context)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    name = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if len(argv) < 2:
        print("usage: MCP_CONFORMANCE_SCENARIO=<scenario> conformance_client.py <server-url>", file=sys.stderr)
        return 2
    scenario = SCENARIOS.get(name)
    if scenario is None:
        print(f"conformance_client: unknown scenario {name!r}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION") or "2025-11-25"
    mode = lifecycle_mode(version)
    if mode is None:
        print(f"conformance_client: unsupported MCP_CONFORMANCE_PROTOCOL_VERSION {version!r}", file=sys.stderr)
        return 2
    context: Context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    try:
        asyncio.run(run(argv[-1], scenario, version, mode, context))
    except Exception:
        logger.exception("scenario %s failed", name)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
