"""Property tests: JSON-RPC classification never fails with anything but a client error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.wire import protocol
from gateway.wire.answers import answered_ids, parsed_answered_ids

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
messageish = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "id": json_values,
        "method": json_values,
        "params": json_values,
        "result": json_values,
        "error": json_values,
    },
)


@settings(max_examples=400)
@given(st.binary(max_size=300), st.sampled_from([*protocol.SESSIONFUL_VERSIONS, *protocol.STATELESS_VERSIONS]))
def test_arbitrary_bytes_are_parsed_or_refused_cleanly(raw: bytes, version: str) -> None:
    try:
        body = protocol.parse_body(raw, version)
    except errors.ClientError as exc:
        assert exc.status in (400, 413)
    else:
        assert body.messages


@settings(max_examples=400)
@given(st.one_of(messageish, st.lists(messageish, max_size=6), json_values))
def test_json_values_classify_consistently(value: Any) -> None:
    try:
        body = protocol.parse_body(json.dumps(value).encode(), "2025-03-26")
    except errors.ClientError as exc:
        assert exc.status in (400, 413)
        return
    for message in body.messages:
        kinds = [message.is_request, message.is_notification, message.is_response]
        assert kinds.count(True) == 1  # exactly one kind each
        if message.is_request:
            assert isinstance(message.id, str | int) and message.id in body.request_ids
    assert body.first_id == (body.requests[0].id if body.requests else None)


def test_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(errors.ParseError, match="nested too deeply"):
        protocol.parse_body(raw, "2025-03-26")
    assert answered_ids("[" * 100_000 + "]" * 100_000) == []


@given(json_values)
def test_answered_ids_are_hashable(value: Any) -> None:
    for request_id in answered_ids(json.dumps(value)):
        hash(request_id)
        assert isinstance(request_id, str | int)


@settings(max_examples=400)
@given(st.one_of(messageish, st.lists(messageish, max_size=6), json_values), st.booleans())
def test_answered_ids_shortcut_finds_what_parsing_finds(value: Any, ascii_only: bool) -> None:
    """The no-parse shortcut (no `"result"`, `"error"` or backslash in the payload) misses nothing,
    whether the keys are spelt out or escaped (`\\u0072esult`)."""
    for data in (json.dumps(value, ensure_ascii=ascii_only), json.dumps(value).replace('"result"', '"\\u0072esult"')):
        assert answered_ids(data) == parsed_answered_ids(data)
