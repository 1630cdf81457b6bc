"""Sans-IO protocol layer: JSON-RPC/MCP header rules, SSE encode/parse, event ids. No IO imports."""
