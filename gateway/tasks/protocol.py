"""The tasks extension's wire rules, sans-IO (ext-tasks `specification/draft/tasks.md`, SEP-2663).

Pure functions over plain values: whether a request negotiated the extension, the shapes of
CreateTaskResult / DetailedTask / the empty acks, and the `server/discover` merge.
"""

from __future__ import annotations

import copy
import datetime
import re
import secrets
from collections.abc import Mapping
from typing import Any

from gateway import errors

EXTENSION = "io.modelcontextprotocol/tasks"
CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
PROGRESS_TOKEN = "progressToken"

TERMINAL = frozenset({"completed", "failed", "cancelled"})
# tasks §Supported Methods: tasks/get, tasks/update, tasks/cancel; tasks/result and tasks/list are gone.
SERVED_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
REMOVED_METHODS = frozenset({"tasks/result", "tasks/list"})
# tasks §Streamable HTTP: Routing Headers: Mcp-Name carries params.taskId.
NAME_PARAM = "taskId"
# tasks §Polymorphic Results / §Task Polling: which payload field each status inlines.
INLINED = {"completed": "result", "failed": "error"}


def negotiated(params: Mapping[str, Any] | None) -> bool:
    """tasks §Capability Negotiation: the extension is declared per request, in `_meta`."""
    meta = params.get("_meta") if isinstance(params, Mapping) else None
    caps = meta.get(CLIENT_CAPABILITIES) if isinstance(meta, Mapping) else None
    extensions = caps.get("extensions") if isinstance(caps, Mapping) else None
    return isinstance(extensions, Mapping) and isinstance(extensions.get(EXTENSION), Mapping)


def missing_capability(what: str) -> errors.MissingCapability:
    """tasks §Capability Negotiation: -32021 naming the extension the request lacks."""
    return errors.MissingCapability(
        f"Missing required client capability: {what} needs the {EXTENSION} extension",
        data={"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
    )


def unknown_task() -> errors.InvalidParams:
    """tasks §Protocol Errors: unknown (or foreign, or expired) task id -> -32602."""
    return errors.InvalidParams("Failed to retrieve task: Task not found")


def iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds (tasks §Tasks: createdAt / lastUpdatedAt)."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def upstream_params(params: Mapping[str, Any], progress_token: str) -> dict[str, Any]:
    """The `tools/call` params the gateway sends upstream for a task it serves itself.

    The gateway is the upstream's client here and wants the plain result, so it does not declare
    the extension; it asks for progress (its notifications become the task's status message)."""
    out = copy.deepcopy(dict(params))
    out.pop("task", None)  # a 2025-11-25 client's `task` hint is tolerated, never forwarded
    meta = dict(out.get("_meta") or {})
    caps = meta.get(CLIENT_CAPABILITIES)
    if isinstance(caps, dict) and isinstance(caps.get("extensions"), dict):
        caps["extensions"].pop(EXTENSION, None)
    meta[PROGRESS_TOKEN] = progress_token
    out["_meta"] = meta
    return out


def progress_message(params: Mapping[str, Any]) -> str:
    """A `notifications/progress` as a human-readable status message."""
    message = params.get("message")
    if isinstance(message, str) and message:
        return message
    progress, total = params.get("progress"), params.get("total")
    return f"progress {progress}/{total}" if total is not None else f"progress {progress}"


def merge_discover(result: dict[str, Any]) -> dict[str, Any]:
    """tasks §Capability Negotiation: advertise the extension next to what the upstream advertises."""
    capabilities = result.setdefault("capabilities", {})
    if isinstance(capabilities, dict):
        extensions = capabilities.setdefault("extensions", {})
        if isinstance(extensions, dict):
            extensions.setdefault(EXTENSION, {})
    return result


TASK_ID_BYTES = 24  # 192 bits from `secrets`: tasks §Security Considerations, task ids are unguessable
_TASK_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")


def new_task_id() -> str:
    return secrets.token_urlsafe(TASK_ID_BYTES)


def valid_task_id(value: object) -> bool:
    return isinstance(value, str) and _TASK_ID_RE.fullmatch(value) is not None
