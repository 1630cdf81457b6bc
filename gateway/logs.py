"""Structured JSON logs with request context (session, stream, JSON-RPC id) from contextvars.

Session ids are credentials: logs carry only their first 8 characters, and never the
upstream's session id.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

session_var: ContextVar[str | None] = ContextVar("mcpgw_session", default=None)
stream_var: ContextVar[str | None] = ContextVar("mcpgw_stream", default=None)
request_var: ContextVar[str | None] = ContextVar("mcpgw_request", default=None)


def short(session_id: str) -> str:
    return session_id[:8]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (("session", session_var), ("stream", stream_var), ("request_id", request_var)):
            value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str) -> None:
    """`fmt` is `json` (default, for log pipelines) or `text` (for humans)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
