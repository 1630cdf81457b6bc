"""mcp-gateway: a horizontally scalable reverse proxy for MCP Streamable HTTP."""

__version__ = "0.1.0"
