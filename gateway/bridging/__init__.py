"""Era bridging: clients of one MCP era in front of upstreams that speak only another."""
