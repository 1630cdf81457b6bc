"""Gateway-served tasks (MCP 2026-07-28 tasks extension, `io.modelcontextprotocol/tasks`)."""
