"""Resumable streams: the pump (upstream -> Redis) and delivery (Redis -> client)."""
