"""The MCP endpoint per protocol era: sessionful, stateless (2026-07-28), legacy HTTP+SSE."""
