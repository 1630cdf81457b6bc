"""JSON logs carry the request context, and session ids only as a short prefix."""

from __future__ import annotations

import json
import logging

from gateway import logs


def test_json_log_line_has_context() -> None:
    record = logging.LogRecord("gateway.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    token = logs.session_var.set(logs.short("A" * 32))
    stream_token = logs.stream_var.set("S" * 12)
    request_token = logs.request_var.set("7")
    try:
        line = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.session_var.reset(token)
        logs.stream_var.reset(stream_token)
        logs.request_var.reset(request_token)
    assert line["msg"] == "hello world" and line["level"] == "warning" and line["logger"] == "gateway.x"
    assert line["session"] == "A" * 8  # never the whole (secret) session id
    assert line["stream"] == "S" * 12 and line["request_id"] == "7"
    assert line["ts"].endswith("Z")


def test_configure_switches_format() -> None:
    logs.configure("info", "json")
    assert isinstance(logging.getLogger().handlers[0].formatter, logs.JsonFormatter)
    logs.configure("warning", "text")
    assert not isinstance(logging.getLogger().handlers[0].formatter, logs.JsonFormatter)
    assert logging.getLogger().level == logging.WARNING
