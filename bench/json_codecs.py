"""JSON libraries for the request path: parse a POST body, write the replay digest's canonical form.

    .venv/bin/python -m bench.json_codecs [--rounds 7] [--n 20000]

Same process, same bodies, alternating order over several rounds; the median round of each is
kept (us per operation). Bodies: a `tools/call` request as clients send it (~120 B) and a 4 KB one
(a tool call with a long text argument). `gateway` is `gateway.wire.codec` itself: orjson behind
its check for a 19-digit run (`json` decides what orjson would answer differently).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from gateway.wire import codec

SMALL = (
    b'{"jsonrpc":"2.0","id":12345,"method":"tools/call",'
    b'"params":{"name":"json","arguments":{"text":"hello world","n":3}}}'
)
LARGE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": "call-7",
        "method": "tools/call",
        "params": {"name": "summarize", "arguments": {"text": "x" * 4000, "style": "short"}},
    }
).encode()

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_SORTED = msgspec.json.Encoder(order="sorted")


def operations(body: bytes) -> dict[str, dict[str, Callable[[], Any]]]:
    value = json.loads(body)
    return {
        "parse": {
            "json": lambda: json.loads(body),
            "orjson": lambda: orjson.loads(body),
            "msgspec": lambda: msgspec.json.decode(body),
            "gateway": lambda: codec.loads(body),
        },
        "canonical": {
            "json": lambda: _CANONICAL.encode([value]).encode(),
            "orjson": lambda: orjson.dumps([value], option=orjson.OPT_SORT_KEYS),
            "msgspec": lambda: _SORTED.encode([value]),
            "gateway": lambda: codec.canonical([value], strict=True),
        },
    }


def measure(rounds: int, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, body in (("small", SMALL), ("4 KB", LARGE)):
        for op, variants in operations(body).items():
            times: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(rounds):
                names = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in names:
                    fn = variants[name]
                    start = time.perf_counter()
                    for _ in range(n):
                        fn()
                    times[name].append((time.perf_counter() - start) / n * 1e6)
            rows.append(
                {"body": label, "op": op, **{name: round(statistics.median(t), 3) for name, t in times.items()}}
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.json_codecs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args(argv)
    rows = measure(args.rounds, args.n)
    print("us per operation, median of", args.rounds, "rounds")
    print(f"{'body':6} {'op':10} {'json':>8} {'orjson':>8} {'msgspec':>8} {'gateway':>8}")
    for row in rows:
        cells = " ".join(f"{row[name]:8.3f}" for name in ("json", "orjson", "msgspec", "gateway"))
        print(f"{row['body']:6} {row['op']:10} {cells}")


if __name__ == "__main__":
    main()
