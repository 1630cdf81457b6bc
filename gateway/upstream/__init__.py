"""Upstream MCP instances: the HTTP client, pools with health checks, session affinity."""
