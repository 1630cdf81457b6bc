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
