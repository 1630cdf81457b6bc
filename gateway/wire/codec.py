"""JSON on the request path: msgspec where it gives `json`'s answer, `json` where it does not.

msgspec parses a `tools/call` body and writes its canonical form (sorted keys, no whitespace: the
replay digest) several times faster than `json` (docs/decisions/0004).
msgspec is strict RFC 8259: it refuses what `json` refuses, and also a few things `json` takes
(NaN and Infinity, numbers past a double's range, lone surrogates, a byte-order mark, UTF-16 and
UTF-32 input). Whatever it refuses goes to `json`, which accepts it or words the error exactly as
before. What both take, they parse to the same values, integers of any size included (orjson, the
other candidate, turns an integer past 64 bits into a float). So the values parsed, and the errors
raised, are `json`'s: `tests/test_codec.py` checks both on generated texts.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

_DECODER = msgspec.json.Decoder()
_SORTED = msgspec.json.Encoder(order="sorted")
# What `json.dumps(..., sort_keys=True, separators=(",", ":"))` uses, built once (dumps builds an
# encoder per call when given options). Immutable, like a compiled regex.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def loads(raw: bytes | str) -> tuple[Any, bool]:
    """The value, and whether msgspec parsed it (strict JSON: no NaN or Infinity in it). Raises
    what `json.loads` raises (ValueError, UnicodeDecodeError, RecursionError)."""
    try:
        return _DECODER.decode(raw), True
    except (msgspec.MsgspecError, ValueError, RecursionError):  # `json` decides, and words the error
        return json.loads(raw), False


def canonical(value: Any, *, strict: bool) -> bytes:
    """Sorted keys, no whitespace. `strict` (msgspec parsed the value): msgspec writes it; else
    `json` (msgspec would write NaN as null: never the same digest as a null)."""
    if strict:
        try:
            return _SORTED.encode(value)
        except (msgspec.MsgspecError, TypeError, ValueError):  # a value built in Python, not parsed
            pass
    return legacy_canonical(value)


def legacy_canonical(value: Any) -> bytes:
    """The canonical form `json` writes (the replay digest before msgspec: kept to match claims
    written by an earlier version during a rolling update)."""
    return _CANONICAL.encode(value).encode()
