"""Virtual servers: one MCP endpoint (`/mcp/NAME`) over several upstream pools, one upstream session per member."""
