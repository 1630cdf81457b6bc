"""gateway.wire.codec: msgspec's speed with `json`'s answers (values and errors)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire import codec

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any, *, ordered: bool = True) -> bool:
    """Equal, with NaN equal to NaN, int/float kept apart (1 and 1.0 parse differently) and, if
    `ordered`, the keys of objects in the same order."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y, ordered=ordered) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        keys_match = list(a) == list(b) if ordered else sorted(a) == sorted(b)
        return keys_match and all(same(a[k], b[k], ordered=ordered) for k in a)
    return bool(a == b)


@settings(max_examples=1000)
@given(values, st.booleans())
def test_any_json_text_parses_to_what_json_gives(value: Any, spaced: bool) -> None:
    raw = json.dumps(value, indent=1 if spaced else None).encode()  # NaN, big integers, surrogates too
    parsed, strict = codec.loads(raw)
    assert same(parsed, json.loads(raw))
    if strict:  # msgspec took it: then its canonical form is the same value again
        assert same(json.loads(codec.canonical(parsed, strict=True)), parsed, ordered=False)


@settings(max_examples=300)
@given(st.binary(max_size=60) | st.text(max_size=30).map(str.encode))
def test_anything_json_refuses_is_refused_with_jsons_error(raw: bytes) -> None:
    try:
        expected: Any = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        with pytest.raises(type(exc)) as caught:
            codec.loads(raw)
        assert str(caught.value) == str(exc)
    else:
        assert same(codec.loads(raw)[0], expected)


@pytest.mark.parametrize(
    ("raw", "strict"),
    [
        (b'{"a": 1}', True),
        (b'{"a": NaN}', False),
        (b'{"a": 1e400}', False),  # past a double: json makes it inf
        (b'{"a": 123456789012345678901234567890}', True),  # exact, as in json (orjson: a float)
        (b'{"a": -9223372036854775809}', True),
        (b'\xef\xbb\xbf{"a": 1}', False),  # a byte-order mark
        (b'"\\ud800"', False),  # a lone surrogate
        ('{"a": 1}'.encode("utf-16"), False),
    ],
)
def test_what_msgspec_refuses_json_decides(raw: bytes, strict: bool) -> None:
    parsed, was_strict = codec.loads(raw)
    assert was_strict is strict and same(parsed, json.loads(raw))


def test_canonical_forms_sort_keys_and_drop_whitespace() -> None:
    assert (
        codec.canonical({"b": [1, {"d": 2, "c": None}], "a": "é"}, strict=True)
        == '{"a":"é","b":[1,{"c":null,"d":2}]}'.encode()
    )
    assert codec.legacy_canonical({"b": 1, "a": "é"}) == b'{"a":"\\u00e9","b":1}'  # json's, ASCII-escaped
    assert codec.canonical({"a": float("nan")}, strict=False) == b'{"a":NaN}'  # never confused with null
    assert codec.canonical({"a": 2**70}, strict=True) == b'{"a":1180591620717411303424}'  # exact
