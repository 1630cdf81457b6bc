"""The errors a policy answers with, in the gateway's one tree: each names the deciding rule."""

from __future__ import annotations

from gateway import errors

POLICY_DENIED = -32003  # implementation-defined server error (JSON-RPC 2.0 §5.1: -32000..-32099)
QUOTA_EXCEEDED = -32004


class Denied(errors.Forbidden):
    """403: a deny rule matched, or no allow rule did."""

    code = POLICY_DENIED

    def __init__(self, rule: str) -> None:
        super().__init__(f"Forbidden by policy rule: {rule}", data={"policy": "deny", "rule": rule})


class QuotaExceeded(errors.ClientError):
    """429 with Retry-After: the request's quota bucket is empty across the fleet."""

    status = 429
    code = QUOTA_EXCEEDED

    def __init__(self, rule: str, retry_after: str) -> None:
        super().__init__(f"Too Many Requests: quota {rule}", data={"policy": "limits", "rule": rule})
        self.headers = {"Retry-After": retry_after}
