"""Everything that talks to Redis: the client, key names, sessions, the event log, limits."""
