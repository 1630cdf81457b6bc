"""What tracing costs: CPU per call of one replica with tracing off, on, and on but unsampled,
against the same replica at a baseline revision (before tracing existed), in one run.

    .venv/bin/python -m bench.tracing_cost [--duration 3] [--rounds 3] [--conns 16] [--baseline main]

Every replica serves the same fast upstream (bench/fast_upstream.py) and Redis; the traced ones
export OTLP/HTTP to a sink in this process (it decodes each export to count spans). Rounds
interleave the targets (rotated per round) so drifts of a shared machine hit all of them alike;
the figure per target is the median over rounds of the replica's process CPU (all threads: the
batch exporter's too) over the calls it completed. "No measurable cost when off" means `off`
is within the spread of `baseline`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bench import loadgen as lg
from bench.suite import checkout, cleanup_redis
from bench.topology import NO_CLIENT_LIMITS, NO_METRICS_LISTENER, PY, RESULTS, tree_cpu_seconds
from tests.integration.procs import Proc, ProcessGroup, free_port

TARGETS = ("baseline", "off", "on", "unsampled")
SSE_EVENTS = 5


class Sink:
    """An OTLP/HTTP receiver that only counts: exports, bytes and spans."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self.spans = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = await request.read()
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        self.exports += 1
        self.bytes += len(body)
        self.spans += sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")  # an empty ExportTraceServiceResponse

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def gateway_env(target: str, sink: Sink) -> dict[str, str]:
    """The OTEL_* variables of a target (this process's own were removed at start: `off` has none)."""
    env: dict[str, str] = dict(NO_METRICS_LISTENER)
    if target in ("on", "unsampled"):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        env["OTEL_SERVICE_NAME"] = f"bench-{target}"
    if target == "unsampled":
        env["OTEL_TRACES_SAMPLER"] = "always_off"  # the facade and the SDK run; nothing is recorded
    return env


def start_gateway(
    group: ProcessGroup, target: str, upstream: str, redis_url: str, prefix: str, sink: Sink, cwd: Path | None
) -> tuple[str, Proc]:
    port = free_port()
    argv = [PY, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--upstream", f"default={upstream}"]
    argv += ["--redis-url", redis_url, "--key-prefix", prefix, "--log-level", "warning", "--log-format", "text"]
    argv += NO_CLIENT_LIMITS
    proc = group.start(f"gateway-{target}-{port}", argv, env=gateway_env(target, sink), cwd=cwd)
    return f"http://127.0.0.1:{port}/mcp", proc


async def measure(
    url: str, pid: int, conns: int, duration: float, op: Callable[[Any, str], Awaitable[Any]]
) -> dict[str, float]:
    async with lg.sessions_at(url, conns) as sids, lg.new_session(conns) as http:

        async def one(i: int) -> None:
            await op(http, sids[i % len(sids)])

        await lg.closed_loop(conns, 0.5, one, warmup=0.0)  # warm-up
        c0 = tree_cpu_seconds(pid)
        res = await lg.closed_loop(conns, duration, one, warmup=0.0)
        cpu = tree_cpu_seconds(pid) - c0
    if res.errors:
        raise SystemExit(f"{url}: {res.errors} errors, first: {res.first_error}")
    return {"cpu_us_per_call": 1e6 * cpu / max(res.completed, 1), "ops_per_s": res.completed / duration}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    group = ProcessGroup(log_dir=RESULTS / "logs")
    sink = Sink()
    await sink.start()
    prefix = f"benchtr{os.getpid()}"
    try:
        port = free_port()
        fast = group.start(f"fast-upstream-{port}", [PY, "-m", "bench.fast_upstream", "--port", str(port)])
        fast.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
        upstream = f"http://127.0.0.1:{port}/mcp"
        base_dir = checkout(args.baseline)
        gateways: dict[str, tuple[str, Proc]] = {}
        targets = tuple(t for t in TARGETS if t in args.targets.split(","))
        for target in targets:
            cwd = base_dir if target == "baseline" else None
            gateways[target] = start_gateway(group, target, upstream, args.redis_url, prefix, sink, cwd)
        for url, proc in gateways.values():
            proc.wait_http(url.removesuffix("/mcp") + "/readyz", timeout=30)

        async def json_op(http: Any, sid: str, url: str) -> None:
            await lg.call_json(http, url, sid)

        async def sse_op(http: Any, sid: str, url: str) -> None:
            await lg.call_sse(http, url, sid, SSE_EVENTS)

        kinds = {"json": json_op, "sse": sse_op}
        rounds: dict[str, dict[str, list[dict[str, float]]]] = {k: {t: [] for t in targets} for k in kinds}
        spans_before: dict[str, int] = {}
        for kind, op in kinds.items():
            spans_before[kind] = sink.spans
            for r in range(args.rounds):
                order = targets[r % len(targets) :] + targets[: r % len(targets)]
                for target in order:
                    url, proc = gateways[target]

                    def bound(http: Any, sid: str, url: str = url, op: Any = op) -> Awaitable[None]:
                        return op(http, sid, url)  # type: ignore[no-any-return]

                    fig = await measure(url, proc.pid, args.conns, args.duration, bound)
                    rounds[kind][target].append(fig)
                    cpu = fig["cpu_us_per_call"]
                    ops = fig["ops_per_s"]
                    line = f"[tracing] {kind} round {r + 1} {target:9s} {cpu:7.1f} us/call {ops:6.0f}/s"
                    print(line, file=sys.stderr)
        await asyncio.sleep(1.0)  # the last batches reach the sink
        out: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "conns": args.conns,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "baseline": args.baseline,
            "baseline_commit": _commit(args.baseline),
            "commit": _commit("HEAD"),
            "sink": {"exports": sink.exports, "spans": sink.spans, "bytes": sink.bytes},
            "results": {},
        }
        for kind, per_target in rounds.items():
            rows = {}
            for target, figs in per_target.items():
                per_call = [f["cpu_us_per_call"] for f in figs]
                rows[target] = {
                    "cpu_us_per_call": round(statistics.median(per_call), 1),
                    "min": round(min(per_call), 1),
                    "max": round(max(per_call), 1),
                    "ops_per_s": round(statistics.median(f["ops_per_s"] for f in figs), 1),
                }
            base = rows["baseline"]["cpu_us_per_call"]
            for row in rows.values():
                row["x_baseline"] = round(row["cpu_us_per_call"] / base, 3)
            out["results"][kind] = rows
        return out
    finally:
        group.stop_all()
        await sink.stop()
        cleanup_redis(args.redis_url, prefix)


def _commit(rev: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True, check=False)
    return done.stdout.strip() or rev


def table(out: dict[str, Any]) -> str:
    lines = [
        f"tracing cost ({out['date']}, {out['cpus']} cores, {out['conns']} conns, {out['rounds']} rounds of "
        f"{out['duration_s']} s, {out['commit']} against baseline {out['baseline_commit']})",
        f"{'call':5s} {'target':10s} {'CPU us/call':>12s} {'(min-max)':>15s} {'x baseline':>10s} {'calls/s':>9s}",
    ]
    for kind, rows in out["results"].items():
        for target, row in rows.items():
            spread = f"{row['min']:.0f}-{row['max']:.0f}"
            lines.append(
                f"{kind:5s} {target:10s} {row['cpu_us_per_call']:12.1f} {spread:>15s} {row['x_baseline']:10.3f} "
                f"{row['ops_per_s']:9.0f}"
            )
    lines.append(f"sink: {out['sink']['spans']} spans in {out['sink']['exports']} exports")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measured window")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--targets", default=",".join(TARGETS), help=f"a subset of {','.join(TARGETS)} (with baseline)")
    p.add_argument("--baseline", default="main", help="git revision of the untraced code (the `baseline` row)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--out", type=Path, help="results JSON (default bench/results/tracing-<date>.json)")
    args = p.parse_args(argv)
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[name]  # replicas inherit this environment: only the traced ones get OTEL_*
    out = asyncio.run(run(args))
    path = args.out or RESULTS / f"tracing-{out['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
