"""Derived figures (ratios, added latency, targets) and the tables: plain text and Markdown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

GATEWAY_TARGETS = ("gw1", "gw3+lb", "gw2+lb", "gw4+lb", "gw5+lb")


def _row(rows: list[dict[str, Any]], target: str, conns: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and r["conns"] == conns), None)


def _gateway_names(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["target"] for r in rows if r["target"].startswith("gw")}, key=lambda t: (t != "gw1", t))


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def derive(results: dict[str, Any]) -> None:
    """Add ratios vs direct/nginx and added latency to scenario rows; evaluate the targets."""
    sc = results["scenarios"]
    for key in ("json", "json_sdk"):
        if key not in sc:
            continue
        for r in sc[key]["rows"]:
            d = _row(sc[key]["rows"], "direct", r["conns"])
            n = _row(sc[key]["rows"], "nginx", r["conns"])
            if d and r["target"] != "direct":
                r["x_direct"] = _ratio(r["ops_per_s"], d["ops_per_s"])
                r["added_p50_ms"] = round(r["p50_ms"] - d["p50_ms"], 3)
                r["added_p99_ms"] = round(r["p99_ms"] - d["p99_ms"], 3)
            if n and r["target"] not in ("direct", "nginx"):
                r["x_nginx"] = _ratio(r["ops_per_s"], n["ops_per_s"])
    if "sse" in sc:
        for r in sc["sse"]["rows"]:
            d = _row(sc["sse"]["rows"], "direct", r["conns"])
            n = _row(sc["sse"]["rows"], "nginx", r["conns"])
            if d and r["target"] != "direct":
                r["x_direct"] = _ratio(r["calls_per_s"], d["calls_per_s"])
                r["added_event_p50_ms"] = round(r["event_latency_p50_ms"] - d["event_latency_p50_ms"], 3)
                r["added_event_p99_ms"] = round(r["event_latency_p99_ms"] - d["event_latency_p99_ms"], 3)
                r["added_e2e_p50_ms"] = round(r["e2e_p50_ms"] - d["e2e_p50_ms"], 3)
            if n and r["target"] not in ("direct", "nginx"):
                r["x_nginx"] = _ratio(r["calls_per_s"], n["calls_per_s"])
    if "churn" in sc:
        for r in sc["churn"]["rows"]:
            d = _row(sc["churn"]["rows"], "direct", r["conns"])
            n = _row(sc["churn"]["rows"], "nginx", r["conns"])
            if d and r["target"] != "direct":
                r["x_direct"] = _ratio(r["sessions_per_s"], d["sessions_per_s"])
            if n and r["target"] not in ("direct", "nginx"):
                r["x_nginx"] = _ratio(r["sessions_per_s"], n["sessions_per_s"])
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


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every scenario present."""
    sc = results["scenarios"]
    out: list[tuple[str, list[str], list[list[str]]]] = []
    for key, title in (
        ("json", "1. tools/call answered with JSON (fast upstream)"),
        ("json_sdk", "1b. tools/call `echo` on the SDK server (real-world; answered over SSE)"),
    ):
        if key in sc:
            lg_name = sc[key]["rows"][0].get("loadgen", "aiohttp") if sc[key]["rows"] else "?"
            hdr = ["target", "conns", "req/s", "p50 ms", "p99 ms", "x direct", "x nginx", "+p50 ms", "+p99 ms", "CPU %"]
            rows = [
                [
                    r["target"],
                    str(r["conns"]),
                    _fmt(r["ops_per_s"]),
                    _fmt(r["p50_ms"]),
                    _fmt(r["p99_ms"]),
                    _fmt(r.get("x_direct")),
                    _fmt(r.get("x_nginx")),
                    _fmt(r.get("added_p50_ms")),
                    _fmt(r.get("added_p99_ms")),
                    _cpu(r),
                ]
                for r in sc[key]["rows"]
            ]
            out.append((f"{title}, load: {lg_name}", hdr, rows))
    if "client_ceiling" in sc:
        c = sc["client_ceiling"]
        out.append(
            (
                "Load generator ceiling: aiohttp client -> fast upstream direct, JSON calls",
                ["conns", "req/s", "p50 ms", "p99 ms", "client CPU %", "upstream CPU %"],
                [
                    [
                        str(c["conns"]),
                        _fmt(c["ops_per_s"]),
                        _fmt(c["p50_ms"]),
                        _fmt(c["p99_ms"]),
                        _fmt(c["cpu_pct"]["bench-client"]),
                        _fmt(c["cpu_pct"]["upstream"]),
                    ]
                ],
            )
        )
    if "sse" in sc:
        ev = sc["sse"]["rows"][0]["events_per_call"] if sc["sse"]["rows"] else 0
        hdr = [
            "target",
            "conns",
            "calls/s",
            "events/s",
            "e2e p50",
            "e2e p99",
            "ms/event",
            "event p50",
            "event p99",
            "+event p50",
            "+event p99",
            "x direct",
            "x nginx",
            "CPU %",
        ]
        rows = [
            [
                r["target"],
                str(r["conns"]),
                _fmt(r["calls_per_s"]),
                _fmt(r["events_per_s"]),
                _fmt(r["e2e_p50_ms"]),
                _fmt(r["e2e_p99_ms"]),
                _fmt(r["per_event_ms"]),
                _fmt(r["event_latency_p50_ms"]),
                _fmt(r["event_latency_p99_ms"]),
                _fmt(r.get("added_event_p50_ms")),
                _fmt(r.get("added_event_p99_ms")),
                _fmt(r.get("x_direct")),
                _fmt(r.get("x_nginx")),
                _cpu(r),
            ]
            for r in sc["sse"]["rows"]
        ]
        out.append(
            (f"2. tools/call answered with SSE ({ev} events; ms; event = upstream write -> client read)", hdr, rows)
        )
    if "churn" in sc:
        hdr = ["target", "conns", "sessions/s", "iter p50 ms", "iter p99 ms", "x direct", "x nginx", "errors", "CPU %"]
        rows = [
            [
                r["target"],
                str(r["conns"]),
                _fmt(r["sessions_per_s"]),
                _fmt(r["iteration_p50_ms"]),
                _fmt(r["iteration_p99_ms"]),
                _fmt(r.get("x_direct")),
                _fmt(r.get("x_nginx")),
                str(r["errors"]),
                _cpu(r),
            ]
            for r in sc["churn"]["rows"]
        ]
        out.append(("3. Session churn: initialize -> tools/call -> DELETE", hdr, rows))
    if "resume" in sc:
        r = sc["resume"]
        rows = [
            [
                "gateway (other replica)",
                str(r["reps"]),
                _fmt(r["first_p50_ms"]),
                _fmt(r["first_p99_ms"]),
                _fmt(r["last_p50_ms"]),
                _fmt(r["last_p99_ms"]),
                _fmt(r["pump_all_p50_ms"]),
                str(r["errors"]),
            ]
        ]
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
        out.append(
            (
                "5. Idle standalone GET streams, one dedicated replica each phase",
                [
                    "streams",
                    "keep-alive s",
                    "open s",
                    "RSS before MB",
                    "RSS after MB",
                    "KB/stream",
                    "idle s",
                    "idle gw CPU %",
                    "us CPU/stream/s",
                    "redis CPU %",
                    "keep-alives/s",
                    "alive at end",
                    "open errors",
                    "gw log errors",
                    "OTHER CPU %",
                ],
                [
                    [
                        f"{r.get('opened', 0)}/{r['streams']}",
                        _fmt(r["keepalive_interval_s"]),
                        _fmt(r.get("open_s")),
                        _fmt(r.get("rss_before_kb", 0) / 1024),
                        _fmt(r.get("rss_after_kb", 0) / 1024),
                        _fmt(r.get("rss_per_stream_kb")),
                        _fmt(r.get("idle_window_s")),
                        _fmt(r.get("gateway_cpu_pct")),
                        _fmt(r.get("gateway_cpu_us_per_stream_per_s")),
                        _fmt(r.get("redis_cpu_pct")),
                        _fmt(r.get("keepalives_per_s")),
                        str(r.get("alive_after_idle", "-")),
                        str(r.get("open_errors", 0)),
                        str(r.get("gateway_log_errors", "-")),
                        _fmt(r.get("other_cpu_pct")),
                    ]
                    for r in sc["idle"]["phases"]
                ],
            )
        )
    if "clients" in sc:
        r = sc["clients"]
        out.append(
            (
                f"6. Upstream client: {r['streams']} concurrent SSE streams x {r['events_per_stream']} events, "
                f"fast upstream, same process and loop",
                ["client", "events/s", "stream p50 ms", "stream p99 ms", "client CPU us/event", "upstream CPU %"],
                [
                    [
                        name,
                        _fmt(r[name]["events_per_s"]),
                        _fmt(r[name]["stream_p50_ms"]),
                        _fmt(r[name]["stream_p99_ms"]),
                        _fmt(r[name]["client_cpu_us_per_event"]),
                        _fmt(r[name]["upstream_cpu_pct"]),
                    ]
                    for name in ("aiohttp", "httpx")
                ],
            )
        )
    if results.get("targets"):
        out.append(
            (
                "Targets",
                ["target", "limit", "measured", "met", "where"],
                [
                    [t["target"], t["limit"], _fmt(t["measured"]), _fmt(t["met"]), t["where"]]
                    for t in results["targets"]
                ],
            )
        )
    prof = results.get("profile") or {}
    if prof.get("self_by_package"):
        rows = [
            ["self, by layer", ", ".join(f"{x['name']} {x['pct']}%" for x in prof["self_by_layer"][:6])],
            ["self, by package", ", ".join(f"{x['name']} {x['pct']}%" for x in prof["self_by_package"][:6])],
            ["self, by function", ", ".join(f"{x['name']} {x['pct']}%" for x in prof["self_by_function"][:5])],
            [
                "inclusive, gateway",
                ", ".join(f"{x['name']} {x['pct']}%" for x in prof["inclusive_gateway_functions"][:5]),
            ],
        ]
        out.append(
            (
                f"Profile: gw1 under JSON load, {prof['load']['conns']} conns ({prof['samples']} samples)",
                ["view", "top"],
                rows,
            )
        )
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
