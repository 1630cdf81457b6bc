"""bench/json_codecs.py: every library measured parses to, and writes, the same values."""

from __future__ import annotations

import json

import msgspec
import orjson

from bench import json_codecs


def test_every_variant_gives_the_same_answer_and_is_measured() -> None:
    for body in (json_codecs.SMALL, json_codecs.LARGE):
        ops = json_codecs.operations(body)
        parsed = {name: fn() for name, fn in ops["parse"].items()}
        assert parsed["gateway"] == (json.loads(body), True)
        assert parsed["json"] == parsed["orjson"] == parsed["msgspec"] == parsed["gateway"][0]
        canonical = {name: fn() for name, fn in ops["canonical"].items()}
        assert len(set(canonical.values())) == 1  # ASCII bodies: the same bytes from all four
        assert orjson.loads(canonical["gateway"]) == msgspec.json.decode(canonical["msgspec"]) == [json.loads(body)]
    rows = json_codecs.measure(rounds=1, n=10)
    assert [(r["body"], r["op"]) for r in rows] == [
        ("small", "parse"),
        ("small", "canonical"),
        ("4 KB", "parse"),
        ("4 KB", "canonical"),
    ]
    assert all(r[name] > 0 for r in rows for name in ("json", "orjson", "msgspec", "gateway"))
