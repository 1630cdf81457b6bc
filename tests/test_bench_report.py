"""bench.report: the derived figures (ratios, added latency, targets) and the tables built from them."""

from __future__ import annotations

from typing import Any

from bench import report


def _json_row(target: str, conns: int, ops: float, p50: float, p99: float) -> dict[str, Any]:
    return {"target": target, "conns": conns, "ops_per_s": ops, "p50_ms": p50, "p99_ms": p99, "cpu_pct": {}}


def _results() -> dict[str, Any]:
    sse = {"events_per_call": 10, "events_per_s": 100.0, "e2e_p99_ms": 9.0, "per_event_ms": 0.5}
    return {
        "scenarios": {
            "json": {
                "rows": [
                    _json_row("direct", 1, 1000.0, 1.0, 2.0),
                    _json_row("nginx", 1, 800.0, 1.2, 2.5),
                    _json_row("gw1", 1, 500.0, 1.4, 3.5),
                ]
            },
            "sse": {
                "rows": [
                    {
                        "target": t,
                        "conns": 1,
                        "calls_per_s": rate,
                        "event_latency_p50_ms": lat,
                        "event_latency_p99_ms": lat * 2,
                        "e2e_p50_ms": lat * 10,
                        **sse,
                    }
                    for t, rate, lat in (("direct", 50.0, 0.1), ("gw1", 40.0, 0.35))
                ]
            },
            "churn": {
                "rows": [
                    {
                        "target": t,
                        "conns": 4,
                        "sessions_per_s": rate,
                        "iteration_p50_ms": 3.0,
                        "iteration_p99_ms": 6.0,
                        "errors": 0,
                    }
                    for t, rate in (("direct", 300.0), ("gw1", 100.0))
                ]
            },
        }
    }


def test_derive_ratios_and_added_latency() -> None:
    results = _results()
    report.derive(results)
    gw = results["scenarios"]["json"]["rows"][2]
    assert gw["x_direct"] == 0.5
    assert gw["x_nginx"] == 0.625
    assert gw["added_p50_ms"] == 0.4 and gw["added_p99_ms"] == 1.5
    nginx = results["scenarios"]["json"]["rows"][1]
    assert nginx["x_direct"] == 0.8 and "x_nginx" not in nginx
    assert "x_direct" not in results["scenarios"]["json"]["rows"][0]
    sse_gw = results["scenarios"]["sse"]["rows"][1]
    assert sse_gw["x_direct"] == 0.8
    assert sse_gw["added_event_p50_ms"] == 0.25 and sse_gw["added_event_p99_ms"] == 0.5
    assert sse_gw["added_e2e_p50_ms"] == 2.5
    assert results["scenarios"]["churn"]["rows"][1]["x_direct"] == 0.333


def test_targets_judge_the_derived_figures() -> None:
    results = _results()
    report.derive(results)
    met = {t["target"]: t["met"] for t in results["targets"]}
    assert met["added p50, 1 conn"] is True  # 0.4 ms <= 0.5 ms
    assert met["added p99, 1 conn"] is True  # 1.5 ms <= 2 ms
    assert met["throughput vs direct, 1 conns"] is False  # 0.5x < 0.6x
    assert met["SSE added p99 per event, 1 conn"] is True


def test_tables_have_one_cell_per_column() -> None:
    results = _results()
    report.derive(results)
    tables = report.tables(results)
    assert [t[0].split(" ")[0] for t in tables] == ["1.", "2.", "3.", "Targets"]
    for _title, header, rows in tables:
        assert rows and all(len(row) == len(header) for row in rows)
    json_rows = tables[0][2]
    assert json_rows[2][:9] == ["gw1", "1", "500", "1.40", "3.50", "0.5", "0.625", "0.4", "1.50"]
    assert json_rows[0][5] == "-"  # direct has no ratio to itself


def _reqpath() -> dict[str, Any]:
    per_call = {"commands": 1.0, "round_trips": 1.0, "by_command": {"hgetall": 1.0}}
    per_event = {"commands": 2.5, "round_trips": 1.2, "by_command": {"xadd": 1.0, "pexpire": 1.5}}
    return {
        "conns": 64,
        "rows": [
            {"target": "direct", "p50_1conn_ms": 0.2, "aiohttp_ops_per_s": 10000.0, "aiohttp_p99_ms": 9.0},
            {
                "target": "gw1",
                "p50_1conn_ms": 0.6,
                "added_p50_1conn_ms": 0.4,
                "aiohttp_ops_per_s": 3000.0,
                "aiohttp_x_direct": 0.3,
                "aiohttp_p99_ms": 40.0,
                "cpu_us_per_call": 140.0,
                "wrk_cpu_us_per_call": 160.0,
                "redis_per_call": per_call,
                "redis_per_sse_event": per_event,
            },
        ],
    }


def test_request_path_targets_and_tables() -> None:
    results: dict[str, Any] = {"scenarios": {"reqpath": _reqpath()}}
    report.derive(results)
    met = {t["target"]: t["met"] for t in results["targets"]}
    assert met["CPU per JSON call (aiohttp load)"] is True  # 140 us <= 150 us
    assert met["CPU per JSON call (wrk load)"] is False  # 160 us > 150 us
    assert met["added p50, 1 conn (aiohttp)"] is True
    assert met["p99, 64 conns (aiohttp)"] is True
    tables = report.tables(results)
    assert [t[0].split(" ")[0] for t in tables] == ["7.", "7b.", "Targets"]
    for _title, header, rows in tables:
        assert rows and all(len(row) == len(header) for row in rows)
    assert tables[1][2] == [["per JSON call", "hgetall 1.0"], ["per SSE event", "xadd 1.0, pexpire 1.5"]]


def test_request_path_targets_name_the_rounds_of_their_median() -> None:
    rp = _reqpath()
    gw = rp["rows"][1]
    gw["rounds"] = [{"cpu_us_per_call": v, "aiohttp_p99_ms": 40.0} for v in (170.0, 140.0, 120.0)]
    gw["added_p50_rounds"] = [0.41, 0.4, 0.52]
    results: dict[str, Any] = {"scenarios": {"reqpath": rp}}
    report.derive(results)
    where = {t["target"]: t["where"] for t in results["targets"]}
    assert where["CPU per JSON call (aiohttp load)"] == "gw1, median of 3 rounds: 170 / 140 / 120"
    assert where["added p50, 1 conn (aiohttp)"] == "gw1, median of 3 rounds: 0.41 / 0.4 / 0.52"
    assert where["CPU per JSON call (wrk load)"] == "gw1"  # no rounds of it: a single figure
