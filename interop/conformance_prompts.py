"""Conformance fixture prompts (plain, with arguments, embedded resource, image, InputRequiredResult)
and argument completion."""

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import Completion, InputRequiredResult

from interop.conformance_common import PNG, answered, elicit_request, elicited


def register_prompts(server: MCPServer) -> None:
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
        if not answered(ctx, ["user_context"]):
            ask = elicit_request("What context should the prompt use?", {"context": {"type": "string"}}, ["context"])
            return InputRequiredResult(input_requests={"user_context": ask})
        text = f"Prompt context: {elicited(ctx, 'user_context').get('context', '')}"
        return [{"role": "user", "content": {"type": "text", "text": text}}]

    # mcp 2.3's MCPServer.completion() has no annotations (its decorator keeps the function's type)
    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]
    async def complete(ref: Any, argument: Any, context: Any) -> Completion:
        candidates = ["paris", "park", "party"] if argument.name == "arg1" else []
        values = [v for v in candidates if v.startswith(argument.value or "")]
        return Completion(values=values, total=len(values), has_more=False)
