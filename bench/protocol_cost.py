"""CPU per request of the server protocol, without and with the connection rules (docs/hardening.md).

    .venv/bin/python -m bench.protocol_cost [--requests 20000] [--rounds 10]

Feeds one typical MCP POST (six headers, a 60-byte body) again and again to one connection of
`LeanHttpToolsProtocol` and of `GuardedHttpToolsProtocol` (no socket: a transport that keeps what
is written), the app answering through `RESPOND`; rounds alternate, and the least CPU time of each
protocol is reported (CPU time, not wall time: the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.server import ServerState

from gateway.http.connections import GuardedHttpToolsProtocol
from gateway.http.framing import Admission, ConnectionRules
from gateway.http.server import RESPOND, LeanHttpToolsProtocol

REQUEST = (
    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: application/json, text/event-stream\r\n"
    b"Content-Type: application/json\r\nMcp-Session-Id: abcdefabcdefabcdefabcdefabcdefab\r\n"
    b"MCP-Protocol-Version: 2025-11-25\r\nContent-Length: 60\r\n\r\n"
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}  '
)
RULES = ConnectionRules(32768, 10.0, 30.0, 8192, 256)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def answer(scope: Any, receive: Any, send: Any) -> None:
    scope[RESPOND](scope, 200, [(b"content-length", b"2")], b"{}")


async def cpu_per_request(protocol: type[LeanHttpToolsProtocol], requests: int) -> float:
    config = uvicorn.Config(answer, http=protocol, lifespan="off", log_level="warning")
    config.load()
    extra: dict[str, Any] = {}
    if protocol is GuardedHttpToolsProtocol:
        extra = {"rules": RULES, "admission": Admission(RULES)}
    proto = protocol(config=config, server_state=ServerState(), app_state={}, **extra)
    transport = FakeTransport()
    proto.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        proto.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs
        await asyncio.sleep(0)
    spent = time.process_time() - started
    if transport.written.count(b"HTTP/1.1 200") != requests:
        raise RuntimeError("not every request was answered")
    proto.connection_lost(None)
    return spent / requests * 1e6


async def measure(requests: int, rounds: int) -> dict[str, float]:
    lean: list[float] = []
    guarded: list[float] = []
    for _ in range(rounds):
        lean.append(await cpu_per_request(LeanHttpToolsProtocol, requests))
        guarded.append(await cpu_per_request(GuardedHttpToolsProtocol, requests))
    return {"lean_us": round(min(lean), 2), "guarded_us": round(min(guarded), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(measure(args.requests, args.rounds))))


if __name__ == "__main__":
    main()
