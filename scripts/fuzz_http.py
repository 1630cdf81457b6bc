"""HTTP fuzzer: malformed and hostile MCP requests against running gateway replicas.

Used by tests/integration/test_fuzz.py (and runnable by hand against any gateway URLs). It
creates a *victim* session whose stream carries a secret marker, then fires `count` generated
requests (random methods, paths, headers, bodies, session ids, cursors — including the victim's
stream cursors under other session ids, but never the victim's own session id) and checks every
answer: no 5xx except the documented upstream errors, no traceback, never the marker.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

MARKER = "victim-secret-7f3a"
ALLOWED_5XX = {502, 503, 504}
VERSIONS = [
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
    "",
    "2024-11-05",
    "garbage",
    "2025-11-25 ",
]
ACCEPTS = [
    "application/json, text/event-stream",
    "application/json",
    "text/event-stream",
    "*/*",
    "",
    "text/html",
    "application/*, text/*",
]
CTYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]
METHODS = ["POST"] * 6 + ["GET"] * 2 + ["DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]
PATHS = [
    "/mcp",
    "/mcp",
    "/mcp",
    "/mcp/default",
    "/mcp/nope",
    "/mcp/%2e%2e",
    "/mcp/default/extra",
    "/healthz",
    "/.well-known/oauth-protected-resource",
    "/metrics",
]
MCP_METHODS = [
    "initialize",
    "tools/list",
    "tools/call",
    "resources/read",
    "prompts/get",
    "ping",
    "notifications/initialized",
    "notifications/cancelled",
    "x" * 300,
    "",
    "tools/call\n",
]


@dataclass
class FuzzReport:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 10**400 if rng.random() < 0.1 else 1, 1.5e308])
    if kind == 3:
        return "".join(rng.choice(string.printable + "é\u2028\ud7ff") for _ in range(rng.randrange(20)))
    if kind in (4, 5):
        return rng.choice(["2.0", "1.0", "", "tools/call"])
    if kind in (6, 7):
        return {
            rng.choice(["id", "method", "params", "jsonrpc", "result", "error", "_meta"]): _json_value(rng, depth + 1)
            for _ in range(rng.randrange(5))
        }
    return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _message(rng: random.Random) -> Any:
    if rng.random() < 0.3:
        return _json_value(rng)
    message: dict[str, Any] = {"jsonrpc": rng.choice(["2.0", "2.0", "2.0", "1.0", 2])}
    if rng.random() < 0.8:
        message["method"] = rng.choice(MCP_METHODS)
    if rng.random() < 0.7:
        message["id"] = rng.choice([1, "a", None, 1.5, [], {}, True, 2**70])
    if rng.random() < 0.6:
        message["params"] = rng.choice(
            [
                {"name": rng.choice(["echo", "slow_count", "nope"]), "arguments": _json_value(rng)},
                {
                    "protocolVersion": rng.choice(VERSIONS),
                    "capabilities": {},
                    "clientInfo": {"name": "f", "version": "1"},
                },
                _json_value(rng),
            ]
        )
    if rng.random() < 0.1:
        message["result"] = _json_value(rng)
    return message


def _body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if roll < 0.2:
        text = json.dumps(_message(rng))
        return text[: rng.randrange(len(text) + 1)].encode()
    if roll < 0.25:
        return b"[" * 5000 + b"]" * 5000
    if roll < 0.35:
        return json.dumps([_message(rng) for _ in range(rng.randrange(0, 8))]).encode()
    return json.dumps(_message(rng), allow_nan=True).encode()


def _session_id(rng: random.Random, known: list[str]) -> str | None:
    roll = rng.random()
    if roll < 0.3:
        return None
    if roll < 0.6 and known:
        return rng.choice(known)
    return rng.choice(
        ["", "x" * 32, "A" * 33, "../../etc", "%C3%A9" * 8, "".join(rng.choices(string.ascii_letters, k=32))]
    )


def _cursor(rng: random.Random, victim_cursors: list[str]) -> str | None:
    roll = rng.random()
    if roll < 0.5:
        return None
    if roll < 0.8 and victim_cursors:
        return rng.choice(victim_cursors)  # someone else's stream: must never be replayed to us
    return rng.choice(["", "abc", "x" * 12 + ".1", "x" * 12 + ".-1", "x" * 12 + ".99999999999999999999", "." * 13])


async def make_victim(url: str) -> tuple[str, list[str]]:
    """A normal session whose stream carries MARKER; returns its id and its stream cursors."""
    headers = {"Accept": ACCEPTS[0], "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=15) as http:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "v", "version": "1"},
            },
        }
        r = await http.post(url, json=init, headers=headers)
        session = r.headers["mcp-session-id"]
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": MARKER}, "_meta": {"progressToken": MARKER}},
        }
        r = await http.post(url, json=call, headers=headers)
        cursors = [line[3:].strip() for line in r.text.splitlines() if line.startswith("id:")]
        assert MARKER in r.text and cursors, r.text
    return session, cursors


async def fuzz(urls: list[str], count: int, *, seed: int = 0, concurrency: int = 32) -> FuzzReport:
    rng = random.Random(seed)
    victim, victim_cursors = await make_victim(urls[0])
    report = FuzzReport()
    known_sessions: list[str] = []
    bases = [u.removesuffix("/mcp") for u in urls]

    async def one(http: httpx.AsyncClient) -> None:
        method = rng.choice(METHODS)
        path = rng.choice(PATHS)
        headers = {"Accept": rng.choice(ACCEPTS), "Content-Type": rng.choice(CTYPES)}
        if (version := rng.choice(VERSIONS + [None] * 4)) is not None:
            headers["MCP-Protocol-Version"] = version
        if (session := _session_id(rng, known_sessions)) is not None:
            headers["Mcp-Session-Id"] = session
        if (cursor := _cursor(rng, victim_cursors)) is not None:
            headers["Last-Event-ID"] = cursor
        if rng.random() < 0.1:
            headers["Origin"] = rng.choice(["http://evil.example", "http://localhost:3000", "null", "http://[::1"])
        if rng.random() < 0.1:
            headers[rng.choice(["Mcp-Method", "Mcp-Name", "Mcp-Param-X", "Mcp-Whatever"])] = rng.choice(MCP_METHODS)
        if rng.random() < 0.02:
            headers["X-Padding"] = "p" * rng.choice([100, 40_000])
        headers = {k: v.encode("ascii", "replace").decode() for k, v in headers.items()}
        body = _body(rng) if method in ("POST", "PUT", "PATCH") else b""
        url = rng.choice(bases) + path
        try:
            async with asyncio.timeout(10):
                response = await http.request(method, url, headers=headers, content=body)
                text = response.text
        except TimeoutError:
            # Valid-looking streams may stay open (standalone GET): that's not a failure.
            report.statuses[0] += 1
            return
        except httpx.LocalProtocolError:
            report.statuses[-1] += 1  # the client library refused to send it: not a gateway answer
            return
        except httpx.HTTPError as exc:
            report.violations.append(f"{method} {path}: transport error {exc!r}")
            return
        report.sent += 1
        report.statuses[response.status_code] += 1
        if (sid := response.headers.get("mcp-session-id")) and sid != victim and len(known_sessions) < 50:
            known_sessions.append(sid)
        if response.status_code >= 500 and response.status_code not in ALLOWED_5XX:
            report.violations.append(f"{method} {path} -> {response.status_code}: {text[:200]}")
        if "Traceback" in text or 'File "' in text:
            report.violations.append(f"{method} {path}: traceback in body")
        if MARKER in text:
            report.violations.append(f"{method} {path}: the victim's data leaked: {text[:200]}")

    async def worker(http: httpx.AsyncClient) -> None:
        while report.sent + report.statuses[0] < count and len(report.violations) < 100:
            await one(http)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=2.0), limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    # the victim still works afterwards, on every replica
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            headers = {
                "Accept": ACCEPTS[0],
                "Content-Type": "application/json",
                "Mcp-Session-Id": victim,
                "MCP-Protocol-Version": "2025-11-25",
            }
            r = await http.post(url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, headers=headers)
            if r.status_code != 200:
                report.violations.append(f"victim session broken after fuzzing on {url}: {r.status_code}")
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls", nargs="+", help="gateway MCP URLs, e.g. http://127.0.0.1:8080/mcp")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = asyncio.run(fuzz(args.urls, args.count, seed=args.seed))
    print(
        json.dumps(
            {"sent": result.sent, "statuses": dict(result.statuses), "violations": result.violations[:20]},
            indent=2,
        )
    )
    raise SystemExit(1 if result.violations else 0)
