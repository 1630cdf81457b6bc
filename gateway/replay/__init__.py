"""Replays and outcomes of client requests: recorded answers replayed on retry, idempotency keys."""
