"""2026-07-28 clients in front of upstream instances that speak only the 2025 (session) eras."""
