"""Conformance fixture tools for the 2026-07-28 revision: InputRequiredResult (SEP-2322), the client
answering in the next round (`input_responses`, `request_state`)."""

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import InputRequest, InputRequiredResult, ListRootsRequest

from interop.conformance_common import answered, elicit_request, elicited, sample_request


def register_input_required_tools(server: MCPServer) -> None:
    user_name = {"user_name": elicit_request("What is your name?", {"name": {"type": "string"}}, ["name"])}

    @server.tool(description="InputRequiredResult with one elicitation (SEP-2322)")
    async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
        if not answered(ctx, ["user_name"]):
            return InputRequiredResult(input_requests=user_name)
        return f"Hello, {elicited(ctx, 'user_name').get('name', '')}!"

    @server.tool(description="InputRequiredResult with one sampling request (SEP-2322)")
    async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
        if not answered(ctx, ["capital_question"]):
            return InputRequiredResult(
                input_requests={"capital_question": sample_request("What is the capital of France?", 100)}
            )
        return "sampling answered"

    @server.tool(description="InputRequiredResult with one roots/list request (SEP-2322)")
    async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
        if not answered(ctx, ["client_roots"]):
            return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})
        return "roots answered"

    @server.tool(description="InputRequiredResult with requestState round trip (SEP-2322)")
    async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
        if not answered(ctx, ["confirm"]) or ctx.request_state != "round-1":
            confirm = elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
            return InputRequiredResult(input_requests={"confirm": confirm}, request_state="round-1")
        return "state-ok: confirmed"

    @server.tool(description="InputRequiredResult with several input requests (SEP-2322)")
    async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
        keys = ["user_name", "greeting", "client_roots"]
        if not answered(ctx, keys) or ctx.request_state != "multi":
            requests: dict[str, InputRequest] = {
                **user_name,
                "greeting": sample_request("Generate a greeting", 50),
                "client_roots": ListRootsRequest(),
            }
            return InputRequiredResult(input_requests=requests, request_state="multi")
        return "all inputs received"

    @server.tool(description="Multi-round InputRequiredResult (SEP-2322)")
    async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
        if ctx.request_state == "round-2" and answered(ctx, ["step2"]):
            return f"done: color={elicited(ctx, 'step2').get('color', '')}"
        if ctx.request_state == "round-1" and answered(ctx, ["step1"]):
            step2 = elicit_request("Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"])
            return InputRequiredResult(input_requests={"step2": step2}, request_state="round-2")
        step1 = elicit_request("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
        return InputRequiredResult(input_requests={"step1": step1}, request_state="round-1")

    @server.tool(description="InputRequiredResult with integrity-protected requestState (SEP-2322)")
    async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
        # The SDK's RequestStateBoundary seals every requestState (AES-GCM) and rejects a tampered echo.
        if ctx.request_state != "sealed" or not answered(ctx, ["confirm"]):
            confirm = elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
            return InputRequiredResult(input_requests={"confirm": confirm}, request_state="sealed")
        return "state verified"

    @server.tool(description="Only asks for inputs whose capability the client declared (SEP-2322)")
    async def test_input_required_result_capabilities(ctx: Context) -> str | InputRequiredResult:
        caps = ctx.client_capabilities
        requests: dict[str, InputRequest] = {}
        if caps is not None and caps.elicitation is not None:
            requests.update(user_name)
        if caps is not None and caps.sampling is not None:
            requests["capital_question"] = sample_request("What is the capital of France?", 100)
        if caps is not None and caps.roots is not None:
            requests["client_roots"] = ListRootsRequest()
        if not requests or answered(ctx, list(requests)):
            return "capabilities respected"
        return InputRequiredResult(input_requests=requests)
