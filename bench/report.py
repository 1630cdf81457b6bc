"""Derived figures (ratios, added latency, targets) and the tables: plain text and Markdown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Per row scenario: its rate (for the ratios) and the added latencies (derived name: measured field).
_DERIVED: dict[str, tuple[str, dict[str, str]]] = {
    "json": ("ops_per_s", {"added_p50_ms": "p50_ms", "added_p99_ms": "p99_ms"}),
    "json_sdk": ("ops_per_s", {"added_p50_ms": "p50_ms", "added_p99_ms": "p99_ms"}),
    "sse": (
        "calls_per_s",
        {
            "added_event_p50_ms": "event_latency_p50_ms",
            "added_event_p99_ms": "event_latency_p99_ms",
            "added_e2e_p50_ms": "e2e_p50_ms",
        },
    ),
    "churn": ("sessions_per_s", {}),
}


def _row(rows: list[dict[str, Any]], target: str, conns: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and r["conns"] == conns), None)


def _gateway_names(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["target"] for r in rows if r["target"].startswith("gw")}, key=lambda t: (t != "gw1", t))


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def derive(results: dict[str, Any]) -> None:
    """Add ratios vs direct/nginx and added latency to scenario rows; evaluate the targets."""
    sc = results["scenarios"]
    for key, (rate, added) in _DERIVED.items():
        rows = sc.get(key, {}).get("rows", [])
        for r in rows:
            d = _row(rows, "direct", r["conns"])
            n = _row(rows, "nginx", r["conns"])
            if d and r["target"] != "direct":
                r["x_direct"] = _ratio(r[rate], d[rate])
                for name, field in added.items():
                    r[name] = round(r[field] - d[field], 3)
            if n and r["target"] not in ("direct", "nginx"):
                r["x_nginx"] = _ratio(r[rate], n[rate])
    results["targets"] = targets(results)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    sc = results["scenarios"]
    out: list[dict[str, Any]] = []

    def add(name: str, limit: str, value: float | None, ok: bool | None, where: str) -> None:
        out.append({"target": name, "limit": limit, "measured": value, "met": ok, "where": where})

    if "json" in sc:
        rows = sc["json"]["rows"]
        lo, hi = min(r["conns"] for r in rows), max(r["conns"] for r in rows)
        for gw in _gateway_names(rows):
            r1, r64 = _row(rows, gw, lo), _row(rows, gw, hi)
            if r1 and "added_p50_ms" in r1:
                add(f"added p50, {lo} conn", "<= 0.5 ms", r1["added_p50_ms"], r1["added_p50_ms"] <= 0.5, gw)
                add(f"added p99, {lo} conn", "<= 2 ms", r1["added_p99_ms"], r1["added_p99_ms"] <= 2.0, gw)
            if r64 and "x_direct" in r64:
                add(f"throughput vs direct, {hi} conns", ">= 0.6x", r64["x_direct"], r64["x_direct"] >= 0.6, gw)
                add(f"p99, {hi} conns", "<= 50 ms", r64["p99_ms"], r64["p99_ms"] <= 50, gw)
    g = _reqpath_gw(sc)
    if g is not None:
        for field, label in (("wrk_cpu_us_per_call", "wrk"), ("cpu_us_per_call", "aiohttp")):
            if field in g:
                add(f"CPU per JSON call ({label} load)", "<= 150 us", g[field], g[field] <= 150, _rounds(g, field))
        v = g["added_p50_1conn_ms"]
        add("added p50, 1 conn (aiohttp)", "<= 0.5 ms", v, v <= 0.5, _rounds(g, "added_p50_1conn_ms"))
        p99 = g["aiohttp_p99_ms"]
        add(f"p99, {sc['reqpath']['conns']} conns (aiohttp)", "<= 50 ms", p99, p99 <= 50, _rounds(g, "aiohttp_p99_ms"))
    if "sse" in sc:
        rows = sc["sse"]["rows"]
        lo = min(r["conns"] for r in rows)
        for gw in _gateway_names(rows):
            r1 = _row(rows, gw, lo)
            if r1 and "added_event_p99_ms" in r1:
                v = r1["added_event_p99_ms"]
                add(f"SSE added p99 per event, {lo} conn", "<= 1 ms", v, v <= 1.0, gw)
    if "resume" in sc and sc["resume"].get("reps"):
        rs = sc["resume"]
        n = rs["events"]
        add(f"{n}-event replay, p50 to last", "<= 20 ms", rs["last_p50_ms"], rs["last_p50_ms"] <= 20, "other replica")
        add(f"{n}-event replay, p99 to last", "<= 20 ms", rs["last_p99_ms"], rs["last_p99_ms"] <= 20, "other replica")
    for ph in (sc.get("idle") or {}).get("phases", []):
        if ph.get("opened"):
            n, ka = ph["streams"], ph["keepalive_interval_s"]
            held = ph.get("alive_after_idle", 0) == n and not ph.get("open_errors")
            add(f"{n} idle streams stay open", f"{n}", ph.get("alive_after_idle", 0), held, f"keep-alive {ka} s")
            v = ph["rss_per_stream_kb"]
            where = f"{n} streams, keep-alive {ka} s" + ("" if held else " (streams failed: not a valid figure)")
            add("RSS per idle stream", "<= 50 KB", v, v <= 50 and held, where)
    return out


def _rounds(row: dict[str, Any], field: str) -> str:
    """ "gw1", with the rounds' figures when the row is the median of several (scenario 7)."""
    values = row.get("added_p50_rounds") if field == "added_p50_1conn_ms" else None
    if values is None:
        values = [r[field] for r in row.get("rounds", []) if field in r]
    if len(values) < 2:
        return "gw1"
    return f"gw1, median of {len(values)} rounds: " + " / ".join(_fmt(v) for v in values)


def _reqpath_gw(sc: dict[str, Any]) -> dict[str, Any] | None:
    rows = (sc.get("reqpath") or {}).get("rows", [])
    return next((r for r in rows if r["target"] == "gw1"), None)


# ---------------------------------------------------------------- tables


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def _cpu(r: dict[str, Any]) -> str:
    cpu = r.get("cpu_pct") or {}
    short = {
        "bench-client": "cli",
        "upstream": "up",
        "haproxy": "lb",
        "redis": "rds",
        "nginx": "ngx",
        "wrk": "wrk",
        "other": "OTHER",
    }
    gws = sum(v for k, v in cpu.items() if k.startswith("gateway"))
    parts = [f"gw {gws:.0f}"] if gws else []
    parts += [f"{short.get(k, k)} {v:.0f}" for k, v in cpu.items() if not k.startswith("gateway")]
    return " ".join(parts)


Columns = tuple[tuple[str, str], ...]  # (header, field of the row; "cpu" is the CPU summary)
Table = tuple[str, list[str], list[list[str]]]

_JSON_COLS: Columns = (
    ("target", "target"),
    ("conns", "conns"),
    ("req/s", "ops_per_s"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("x direct", "x_direct"),
    ("x nginx", "x_nginx"),
    ("+p50 ms", "added_p50_ms"),
    ("+p99 ms", "added_p99_ms"),
    ("CPU %", "cpu"),
)
_SSE_COLS: Columns = (
    ("target", "target"),
    ("conns", "conns"),
    ("calls/s", "calls_per_s"),
    ("events/s", "events_per_s"),
    ("e2e p50", "e2e_p50_ms"),
    ("e2e p99", "e2e_p99_ms"),
    ("ms/event", "per_event_ms"),
    ("event p50", "event_latency_p50_ms"),
    ("event p99", "event_latency_p99_ms"),
    ("+event p50", "added_event_p50_ms"),
    ("+event p99", "added_event_p99_ms"),
    ("x direct", "x_direct"),
    ("x nginx", "x_nginx"),
    ("CPU %", "cpu"),
)
_CHURN_COLS: Columns = (
    ("target", "target"),
    ("conns", "conns"),
    ("sessions/s", "sessions_per_s"),
    ("iter p50 ms", "iteration_p50_ms"),
    ("iter p99 ms", "iteration_p99_ms"),
    ("x direct", "x_direct"),
    ("x nginx", "x_nginx"),
    ("errors", "errors"),
    ("CPU %", "cpu"),
)
_IDLE_COLS: Columns = (
    ("streams", "streams_opened"),
    ("keep-alive s", "keepalive_interval_s"),
    ("open s", "open_s"),
    ("RSS before MB", "rss_before_mb"),
    ("RSS after MB", "rss_after_mb"),
    ("KB/stream", "rss_per_stream_kb"),
    ("idle s", "idle_window_s"),
    ("idle gw CPU %", "gateway_cpu_pct"),
    ("us CPU/stream/s", "gateway_cpu_us_per_stream_per_s"),
    ("redis CPU %", "redis_cpu_pct"),
    ("keep-alives/s", "keepalives_per_s"),
    ("alive at end", "alive_after_idle"),
    ("open errors", "open_errors"),
    ("gw log errors", "gateway_log_errors"),
    ("OTHER CPU %", "other_cpu_pct"),
)
_CLIENT_COLS: Columns = (
    ("client", "name"),
    ("events/s", "events_per_s"),
    ("stream p50 ms", "stream_p50_ms"),
    ("stream p99 ms", "stream_p99_ms"),
    ("client CPU us/event", "client_cpu_us_per_event"),
    ("upstream CPU %", "upstream_cpu_pct"),
)


def _table(title: str, cols: Columns, rows: list[dict[str, Any]]) -> Table:
    cells = [[_cpu(r) if field == "cpu" else _fmt(r.get(field)) for _, field in cols] for r in rows]
    return title, [header for header, _ in cols], cells


def _idle_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        **r,
        "streams_opened": f"{r.get('opened', 0)}/{r['streams']}",
        "rss_before_mb": r.get("rss_before_kb", 0) / 1024,
        "rss_after_mb": r.get("rss_after_kb", 0) / 1024,
        "open_errors": r.get("open_errors", 0),
    }


_REDIS_CLIENT_COLS: Columns = (
    ("client", "client"),
    ("HGETALL+2 PEXPIRE pipeline ops/s", "pipeline_ops_per_s"),
    ("pipeline CPU us/op", "pipeline_cpu_us"),
    ("HGETALL ops/s", "hgetall_ops_per_s"),
    ("HGETALL CPU us/op", "hgetall_cpu_us"),
    ("error", "error"),
)
_REQPATH_COLS: Columns = (
    ("target", "target"),
    ("p50 1 conn ms", "p50_1conn_ms"),
    ("+p50 ms", "added_p50_1conn_ms"),
    ("aiohttp req/s", "aiohttp_ops_per_s"),
    ("x direct", "aiohttp_x_direct"),
    ("p99 ms", "aiohttp_p99_ms"),
    ("wrk req/s", "wrk_ops_per_s"),
    ("wrk x direct", "wrk_x_direct"),
    ("wrk p99 ms", "wrk_p99_ms"),
    ("CPU us/call", "cpu_us_per_call"),
    ("wrk CPU us/call", "wrk_cpu_us_per_call"),
    ("Redis cmds/call", "redis_cmds_call"),
    ("round trips/call", "redis_rtt_call"),
    ("Redis CPU us/call", "redis_cpu_call"),
    ("Redis cmds/SSE event", "redis_cmds_event"),
    ("round trips/SSE event", "redis_rtt_event"),
)


def _reqpath_table(rp: dict[str, Any]) -> Table:
    rows = []
    for r in rp["rows"]:
        call, event = r.get("redis_per_call") or {}, r.get("redis_per_sse_event") or {}
        rows.append(
            {
                **r,
                "redis_cmds_call": call.get("commands"),
                "redis_rtt_call": call.get("round_trips"),
                "redis_cpu_call": call.get("cpu_us"),
                "redis_cmds_event": event.get("commands"),
                "redis_rtt_event": event.get("round_trips"),
            }
        )
    title = (
        f"7. Request path, one replica: JSON tools/call at 1 and {rp['conns']} connections (fast upstream); "
        "CPU = the replica's process CPU time / calls served; Redis from INFO commandstats"
    )
    return _table(title, _REQPATH_COLS, rows)


def _reqpath_commands(rp: dict[str, Any]) -> Table:
    g: dict[str, Any] = next((r for r in rp["rows"] if r["target"] == "gw1"), {})
    rows = []
    for key, what in (("redis_per_call", "per JSON call"), ("redis_per_sse_event", "per SSE event")):
        by = (g.get(key) or {}).get("by_command") or {}
        rows.append([what, ", ".join(f"{k} {v}" for k, v in by.items()) or "-"])
    return "7b. Redis commands by name, gw1 (from INFO commandstats; inside Lua scripts too)", ["", "commands"], rows


def _top(items: list[dict[str, Any]], n: int) -> str:
    return ", ".join(f"{x['name']} {x['pct']}%" for x in items[:n])


def tables(results: dict[str, Any]) -> list[Table]:
    """(title, header, rows) for every scenario present."""
    sc = results["scenarios"]
    out: list[Table] = []
    for key, title in (
        ("json", "1. tools/call answered with JSON (fast upstream)"),
        ("json_sdk", "1b. tools/call `echo` on the SDK server (real-world; answered over SSE)"),
    ):
        if key in sc:
            lg_name = sc[key]["rows"][0].get("loadgen", "aiohttp") if sc[key]["rows"] else "?"
            out.append(_table(f"{title}, load: {lg_name}", _JSON_COLS, sc[key]["rows"]))
    if "client_ceiling" in sc:
        c = sc["client_ceiling"]
        out.append(
            (
                "Load generator ceiling: aiohttp client -> fast upstream direct, JSON calls",
                ["conns", "req/s", "p50 ms", "p99 ms", "client CPU %", "upstream CPU %"],
                [
                    [_fmt(c[k]) for k in ("conns", "ops_per_s", "p50_ms", "p99_ms")]
                    + [_fmt(c["cpu_pct"]["bench-client"]), _fmt(c["cpu_pct"]["upstream"])]
                ],
            )
        )
    if "reqpath" in sc:
        out.append(_reqpath_table(sc["reqpath"]))
        out.append(_reqpath_commands(sc["reqpath"]))
    if "redis_clients" in sc:
        rc = sc["redis_clients"]
        title = (
            f"8. Redis clients, same commands, same Redis, same process: {rc['concurrency']} tasks, "
            f"{rc['ops_per_round']} ops, best of {rc['rounds']} rounds (CPU = this process, all threads)"
        )
        out.append(_table(title, _REDIS_CLIENT_COLS, rc["rows"]))
    if "sse" in sc:
        ev = sc["sse"]["rows"][0]["events_per_call"] if sc["sse"]["rows"] else 0
        title = f"2. tools/call answered with SSE ({ev} events; ms; event = upstream write -> client read)"
        out.append(_table(title, _SSE_COLS, sc["sse"]["rows"]))
    if "churn" in sc:
        out.append(_table("3. Session churn: initialize -> tools/call -> DELETE", _CHURN_COLS, sc["churn"]["rows"]))
    if "resume" in sc:
        r = sc["resume"]
        keys = ("reps", "first_p50_ms", "first_p99_ms", "last_p50_ms", "last_p99_ms", "pump_all_p50_ms", "errors")
        rows = [["gateway (other replica)"] + [_fmt(r[k]) for k in keys]]
        if "resume_direct" in sc:
            d = sc["resume_direct"]
            rows.append(
                [
                    "upstream itself (reference)",
                    "-",
                    _fmt(d["first_p50_ms"]),
                    "-",
                    _fmt(d["last_p50_ms"]),
                    _fmt(d["last_p99_ms"]),
                    "-",
                    "0",
                ]
            )
        out.append(
            (
                f"4. Resume: {r['events']} events buffered, GET + Last-Event-ID (first event) on another replica (ms)",
                ["", "reps", "first p50", "first p99", "last p50", "last p99", "pumped p50", "errors"],
                rows,
            )
        )
    if "idle" in sc:
        title = "5. Idle standalone GET streams, one dedicated replica each phase"
        out.append(_table(title, _IDLE_COLS, [_idle_row(r) for r in sc["idle"]["phases"]]))
    if "clients" in sc:
        r = sc["clients"]
        title = (
            f"6. Upstream client: {r['streams']} concurrent SSE streams x {r['events_per_stream']} events, "
            f"fast upstream, same process and loop"
        )
        out.append(
            _table(
                title, _CLIENT_COLS, [{"name": name, **r[name]} for name in ("aiohttp", "httpx", "http1") if name in r]
            )
        )
    if results.get("targets"):
        cols = (("target", "target"), ("limit", "limit"), ("measured", "measured"), ("met", "met"), ("where", "where"))
        out.append(_table("Targets", cols, results["targets"]))
    prof = results.get("profile") or {}
    if prof.get("self_by_package"):
        rows = [
            ["self, by layer", _top(prof["self_by_layer"], 6)],
            ["self, by package", _top(prof["self_by_package"], 6)],
            ["self, by function", _top(prof["self_by_function"], 5)],
            ["inclusive, gateway", _top(prof["inclusive_gateway_functions"], 5)],
        ]
        title = f"Profile: gw1 under JSON load, {prof['load']['conns']} conns ({prof['samples']} samples)"
        out.append((title, ["view", "top"], rows))
    return out


def text(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"mcp-gateway bench {results['date']}: {m['cpus']} CPUs, {m['mem_gb']} GB ({m['cpu_model']}), "
        f"mode {results['mode']}, total {results.get('elapsed_s', '?')} s"
    ]
    for title, hdr, rows in tables(results):
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(hdr)]
        lines += ["", title, "  ".join(h.ljust(w) for h, w in zip(hdr, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Run of **{results['date']}** on {m['cpus']} CPUs / {m['mem_gb']} GB ({m['cpu_model']}, Linux "
        f"{m['kernel']}, Python {m['python']}); every process (load generator, upstream, nginx, HAProxy, "
        f"gateways, Redis) shares those {m['cpus']} cores. Command: `{results['command']}` "
        f"({results.get('elapsed_s', '?')} s). Raw numbers: `bench/results/{results['date']}.json`.",
    ]
    for title, hdr, rows in tables(results):
        lines += ["", f"**{title}**", "", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def update_readme(path: Path, results: dict[str, Any]) -> None:
    """Replace the generated block of bench/README.md (between the markers) with this run's tables."""
    block = f"{START}\n{markdown(results)}\n{END}"
    text_ = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text_:
        text_ += f"\n{START}\n{END}\n"
    path.write_text(re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text_, flags=re.S))
