"""The ASGI app: lifespan, routes, admission (origin, auth, limits)."""
