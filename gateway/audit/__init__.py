"""The audit trail: one record per decided JSON-RPC request, written to stdout and/or a capped Redis stream."""
