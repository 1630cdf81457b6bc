"""The shared response cache (SEP-2549): decisions on the request path, and upstream watches."""
