"""ASGI responses shared by the endpoints: JSON-RPC errors, relayed and SSE responses, bounded body reads."""
