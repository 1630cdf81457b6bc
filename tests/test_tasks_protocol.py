"""The tasks extension's wire rules and the record's shapes, on plain values."""

from __future__ import annotations

import json
from typing import Any

from gateway import errors
from gateway.tasks import protocol
from gateway.tasks.record import TaskRecord

WITH_TASKS: dict[str, Any] = {"_meta": {protocol.CLIENT_CAPABILITIES: {"extensions": {protocol.EXTENSION: {}}}}}


def record(**overrides: Any) -> TaskRecord:
    base: dict[str, Any] = {
        "id": "t" * 32,
        "status": "working",
        "principal": "",
        "pool": "default",
        "tool": "slow",
        "owner": "r1",
        "created": 1_700_000_000_123,
        "updated": 1_700_000_001_000,
        "ttl_ms": 60_000,
        "poll_ms": 500,
    }
    return TaskRecord(**{**base, **overrides})


def test_negotiation_is_per_request_meta() -> None:
    assert protocol.negotiated(WITH_TASKS)
    assert not protocol.negotiated({})
    assert not protocol.negotiated(None)
    assert not protocol.negotiated({"_meta": {protocol.CLIENT_CAPABILITIES: {"extensions": {}}}})
    assert not protocol.negotiated({"_meta": {protocol.CLIENT_CAPABILITIES: {"extensions": {protocol.EXTENSION: 1}}}})
    assert not protocol.negotiated({"_meta": "x"})


def test_missing_capability_names_the_extension() -> None:
    body = protocol.missing_capability("tasks/get").to_jsonrpc(7)
    assert body["error"]["code"] == errors.MISSING_REQUIRED_CAPABILITY == -32021
    assert body["error"]["data"] == {"requiredCapabilities": {"extensions": {protocol.EXTENSION: {}}}}
    assert protocol.unknown_task().code == errors.INVALID_PARAMS


def test_upstream_params_drop_the_extension_and_ask_for_progress() -> None:
    params = {"name": "slow", "arguments": {"a": 1}, "task": {"ttl": 5}, **WITH_TASKS}
    out = protocol.upstream_params(params, "tok")
    assert out["_meta"]["progressToken"] == "tok"
    assert protocol.EXTENSION not in out["_meta"][protocol.CLIENT_CAPABILITIES]["extensions"]
    assert "task" not in out and out["arguments"] == {"a": 1}
    assert protocol.negotiated(params)  # the caller's params are untouched


def test_progress_message_and_iso_times() -> None:
    assert protocol.progress_message({"progress": 1, "total": 4}) == "progress 1/4"
    assert protocol.progress_message({"progress": 2}) == "progress 2"
    assert protocol.progress_message({"progress": 2, "message": "half way"}) == "half way"
    assert protocol.iso(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_discover_merge_keeps_the_upstreams_capabilities() -> None:
    merged = protocol.merge_discover({"capabilities": {"tools": {}, "extensions": {"x/y": {"a": 1}}}})
    assert merged["capabilities"] == {"tools": {}, "extensions": {"x/y": {"a": 1}, protocol.EXTENSION: {}}}
    assert protocol.merge_discover({})["capabilities"]["extensions"] == {protocol.EXTENSION: {}}


def test_task_ids_are_unguessable_and_checked() -> None:
    ids = {protocol.new_task_id() for _ in range(100)}
    assert len(ids) == 100 and all(protocol.valid_task_id(i) for i in ids)
    assert not protocol.valid_task_id("short")
    assert not protocol.valid_task_id(None)
    assert not protocol.valid_task_id("x" * 31 + "!")


def test_create_result_is_flat_with_integer_milliseconds() -> None:
    created = record().created_result()
    assert created["resultType"] == "task" and created["taskId"] == "t" * 32
    assert created["ttlMs"] == 60_000 and created["pollIntervalMs"] == 500
    assert created["createdAt"] == "2023-11-14T22:13:20.123Z"
    assert not {"task", "ttl", "pollInterval", "result", "error", "inputRequests", "requestState"} & set(created)


def test_detailed_inlines_by_status() -> None:
    done = record(status="completed", result=json.dumps({"content": [], "isError": True})).detailed()
    assert done["resultType"] == "complete" and done["result"] == {"content": [], "isError": True}
    failed = record(status="failed", error=json.dumps({"code": -32603, "message": "x"}), message="x").detailed()
    assert failed["error"]["code"] == -32603 and "result" not in failed and failed["statusMessage"] == "x"
    asking = record(status="input_required", inputs={"1.confirm": json.dumps({"method": "elicitation/create"})})
    assert asking.detailed()["inputRequests"] == {"1.confirm": {"method": "elicitation/create"}}
    working = record().detailed()
    assert not {"result", "error", "inputRequests", "statusMessage"} & set(working)
