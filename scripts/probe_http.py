"""Probe a gateway's HTTP layer as an attacker on the network would (docs/hardening.md).

    .venv/bin/python scripts/probe_http.py [--repo PATH] [--trickle 200] [--wait 15] [extra gateway flags]

Starts one replica (`python -m gateway` from `--repo`, embedded store, an upstream that is never
called) and reports, as JSON:
- `header_line`: one unauthenticated request with a 64 MB header line: the status, whether the
  connection was closed after it, and the replica's VmRSS before and after (/proc/PID/status);
- `trickle`: `--trickle` connections sending one header byte every second, and one that sent half a
  body: how many are still open after `--wait` s;
- `flood`: `--flood` idle connections from 127.0.0.1: how many are still open a second later, and
  what a POST from 127.0.0.1 and a /healthz from 127.0.0.2 get then.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start(repo: Path, port: int, extra: list[str], nofile: int = 0) -> subprocess.Popen[bytes]:
    """The replica; `nofile` > 0: its open-file limit, soft and hard (a small box's)."""
    argv = [sys.executable, "-m", "gateway", "--port", str(port), "--upstream", "default=http://127.0.0.1:9/mcp"]

    def limit() -> None:
        if nofile > 0:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [*argv, "--log-level", "error", *extra], cwd=repo, stdout=subprocess.DEVNULL, preexec_fn=limit
    )
    for _ in range(200):
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the gateway did not start")


def read_answer(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """What the server wrote, and whether it then closed (EOF or reset) within `seconds`."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return got, False
    except OSError:
        return got, True
    return got, True


def header_line(port: int, pid: int, size: int) -> dict[str, object]:
    before = rss_kb(pid)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    sent = 0
    chunk = b"a" * (1 << 20)
    with contextlib.suppress(OSError):  # the server may stop reading (and close) before the end
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.sendall(b"\r\nContent-Length: 0\r\n\r\n")
    peak = rss_kb(pid)
    answer, closed = read_answer(sock, 1.0)  # closed at once, not by the keep-alive timer
    sock.close()
    return {
        "sent_bytes": sent,
        "status": answer.split(b"\r\n", 1)[0].decode(errors="replace"),
        "closed_after_answer": closed,
        "rss_kb_before": before,
        "rss_kb_after": peak,
    }


def trickle(port: int, count: int, wait: float) -> dict[str, object]:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    half_body = socket.create_connection(("127.0.0.1", port))
    half_body.sendall(
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    stop = threading.Event()

    def drip() -> None:
        payload = b"POST /mcp HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        for i in range(len(payload)):
            if stop.wait(1.0):
                return
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(payload[i : i + 1])

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    time.sleep(wait)
    stop.set()
    thread.join()
    still_open = 0
    statuses: dict[str, int] = {}
    for s in [*socks, half_body]:
        answer, closed = read_answer(s, 0.05)
        if not closed:
            still_open += 1
        if answer:
            status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
            statuses[status] = statuses.get(status, 0) + 1
        s.close()
    return {"connections": count + 1, "seconds": wait, "still_open": still_open, "answers": statuses}


def flood(port: int, count: int) -> dict[str, object]:
    """`count` idle connections from 127.0.0.1; then how many are still open 1 s later, and what a
    request from 127.0.0.1 and a /healthz from 127.0.0.2 get."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    time.sleep(1.0)
    still_open = sum(1 for sock in socks if not read_answer(sock, 0.01)[1])

    def ask(source: str, request: bytes) -> str:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        answer, _ = read_answer(sock, 1.0)
        sock.close()
        return answer.split(b"\r\n", 1)[0].decode(errors="replace")

    post = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    report = {
        "connections": count,
        "still_open_after_1s": still_open,
        "post_from_127.0.0.1": ask("127.0.0.1", post),
        "healthz_from_127.0.0.2": ask("127.0.0.2", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
    }
    for sock in socks:
        sock.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--header-mb", type=int, default=64)
    parser.add_argument("--trickle", type=int, default=200)
    parser.add_argument("--wait", type=float, default=15.0)
    parser.add_argument("--flood", type=int, default=400)
    parser.add_argument("--nofile", type=int, default=0, help="the replica's open-file limit (0: inherited)")
    args, extra = parser.parse_known_args()
    port = free_port()
    proc = start(args.repo, port, extra, args.nofile)
    try:
        report = {
            "repo": str(args.repo),
            "header_line": header_line(port, proc.pid, args.header_mb << 20),
            "trickle": trickle(port, args.trickle, args.wait),
            "flood": flood(port, args.flood),
        }
    finally:
        proc.kill()
        proc.wait()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
