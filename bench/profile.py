"""py-spy profile of one gateway replica under scenario 1 (JSON tools/call, 64 connections).

Two recordings back to back while wrk keeps the load on: a flame graph (`profile.svg`) and
collapsed stacks (`--format raw`), from which the top costs are extracted as text: leaf
functions by self time, and a breakdown of self time by the package the leaf frame lives in.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from bench import loadgen as lg
from bench.topology import REPO, Topology

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = REPO / ".venv" / "bin" / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


LAYERS = {
    "HTTP server (uvicorn, httptools)": ("uvicorn", "httptools", "h11"),
    "ASGI framework (starlette, fastapi)": ("starlette", "fastapi", "anyio"),
    "upstream client (aiohttp)": ("aiohttp", "yarl", "multidict", "aiohappyeyeballs", "propcache", "aiosignal"),
    "Redis client (redis-py)": ("redis", "hiredis"),
    "event loop (asyncio, uvloop)": ("asyncio", "uvloop", "runpy", "<frozen runpy>", "contextlib", "selectors"),
    "metrics (prometheus_client)": ("prometheus_client",),
    "json": ("json",),
    "tenacity": ("tenacity",),
    "logging": ("logging",),
}


def bucket(path: str) -> str:
    """The package of a frame's file. py-spy prints paths relative to sys.path entries
    (`starlette/routing.py`, `asyncio/tasks.py`, `gateway/eras/sessionful.py`)."""
    p = path.replace("\\", "/")
    if "/site-packages/" in p:
        p = p.split("/site-packages/", 1)[1]
    m = re.search(r"/lib/python3\.\d+/(.+)$", p)
    if m:
        p = m.group(1)
    if p.startswith("gateway/") or "/gateway/" in p:
        return "gateway/" + p.rsplit("/", 1)[-1]
    if p.startswith("<"):
        return p
    head = p.split("/", 1)[0]
    return head.removesuffix(".py") or "?"


def layer(pkg: str) -> str:
    if pkg.startswith("gateway/"):
        return "gateway code"
    for name, pkgs in LAYERS.items():
        if pkg in pkgs:
            return name
    return f"other ({pkg})"


def analyse(raw_path: Path, top: int = 10) -> dict[str, Any]:
    """Self time per leaf function and per package; inclusive time per gateway function."""
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    self_layer: Counter[str] = Counter()
    incl_gateway: Counter[str] = Counter()
    incl_pkg: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        parsed = []
        for f in frames:
            m = FRAME_RE.match(f)
            parsed.append((m.group("func"), m.group("file")) if m else (f, ""))
        if not parsed:
            continue
        func, file = parsed[-1]
        self_fn[f"{func} ({bucket(file)})"] += count
        self_pkg[bucket(file)] += count
        self_layer[layer(bucket(file))] += count
        for name in {
            f"{fn} ({bucket(fl)})"
            for fn, fl in parsed
            if "gateway/" in bucket(fl) and bucket(fl) not in ("gateway/cli.py", "gateway/__main__.py")
        }:
            incl_gateway[name] += count
        for pkg in {bucket(fl) for _, fl in parsed}:
            incl_pkg[pkg] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": k, "pct": round(100 * v / total, 1)} for k, v in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self_by_function": share(self_fn),
        "self_by_layer": share(self_layer),
        "self_by_package": share(self_pkg),
        "inclusive_by_package": share(incl_pkg),
        "inclusive_gateway_functions": share(incl_gateway),
    }


async def profile_gateway(topo: Topology, seconds: int, results: Path, workdir: Path) -> dict[str, Any]:
    binary = py_spy()
    if binary is None:
        return {"skipped": "py-spy is not installed (bench/setup installs it)"}
    gw = topo.gateways[0]
    url = topo.urls("fast")["gw1"]
    svg = results / "profile.svg"
    raw = results / "profile.raw.txt"
    async with lg.sessions_at(url, 64) as sids:
        load = asyncio.create_task(
            lg.run_wrk(
                url, sids, lg.tool_call("json", {"text": "hi"}), conns=64, duration=2 * seconds + 3, workdir=workdir
            )
        )
        await asyncio.sleep(1.0)
        outputs = []
        for fmt, path in (("flamegraph", svg), ("raw", raw)):
            proc = await asyncio.create_subprocess_exec(
                binary,
                "record",
                "--pid",
                str(gw.proc.pid),
                "--duration",
                str(seconds),
                "--rate",
                "200",
                "--format",
                fmt,
                "-o",
                str(path),
                "--nonblocking",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            outputs.append(out.decode(errors="replace")[-500:])
            if proc.returncode != 0:
                load.cancel()
                return {"skipped": f"py-spy failed: {outputs[-1]}"}
        dump = await asyncio.create_subprocess_exec(
            binary,
            "dump",
            "--pid",
            str(gw.proc.pid),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        dump_out, _ = await dump.communicate()
        (results / "profile.dump.txt").write_bytes(dump_out)
        wrk_row = await load
    analysis = analyse(raw)
    return {
        "replica_pid": gw.proc.pid,
        "load": {k: wrk_row[k] for k in ("conns", "ops_per_s", "p50_ms", "p99_ms")},
        "svg": str(svg.relative_to(REPO)),
        "raw": str(raw.relative_to(REPO)),
        **analysis,
    }
