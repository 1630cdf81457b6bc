"""A 2025-era client (2025-03-26, 2025-06-18, 2025-11-25) in front of an upstream that speaks only
2026-07-28: the gateway owns the session, asks the upstream statelessly, and turns input-required
results into the 2025 server-to-client requests on the client's resumable stream."""
