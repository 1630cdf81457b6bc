"""JSON on the request path: orjson where it gives `json`'s answer, `json` where it does not.

A `tools/call` body parses in ~0.4 us with orjson against ~2.4 us with `json`, and its canonical
form (sorted keys, no whitespace: the replay digest) is written in ~0.2 us against ~2.2 us
(bench/README.md, "Choices by measurement"). orjson is strict RFC 8259: it refuses what `json`
refuses, and also a few things `json` takes (NaN and Infinity, lone surrogates, a byte-order mark,
UTF-16 and UTF-32 input). Whatever orjson refuses goes to `json`, which accepts it or words the
error exactly as before. One thing orjson takes and answers differently: an integer past 64 bits
becomes a float. A text with a run of 19 digits or more (where such an integer would have to be)
goes to `json` at once. So the values parsed, and the errors raised, are `json`'s
(`tests/test_codec.py` checks both on generated texts).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# What `json.dumps(..., sort_keys=True, separators=(",", ":"))` uses, built once (dumps builds an
# encoder per call when given options). Immutable, like a compiled regex.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
# 2**63 has 19 digits: a shorter run is an integer orjson keeps exact.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_STR = re.compile(r"[0-9]{19}")


def loads(raw: bytes | str) -> tuple[Any, bool]:
    """The value, and whether orjson parsed it (strict JSON: no NaN, no integer past 64 bits).
    Raises what `json.loads` raises (ValueError, UnicodeDecodeError, RecursionError)."""
    long_digits = _LONG_DIGITS.search(raw) if isinstance(raw, bytes) else _LONG_DIGITS_STR.search(raw)
    if long_digits is None:
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw), False


def canonical(value: Any, *, strict: bool) -> bytes:
    """Sorted keys, no whitespace. `strict` (orjson parsed the value): orjson writes it; else
    `json` (orjson would write NaN as null, and refuses integers past 64 bits)."""
    if strict:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a value built in Python, not parsed: `json` decides
            pass
    return legacy_canonical(value)


def legacy_canonical(value: Any) -> bytes:
    """The canonical form `json` writes (the replay digest before orjson: kept to match claims
    written by an earlier version during a rolling update)."""
    return _CANONICAL.encode(value).encode()
