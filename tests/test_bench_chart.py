"""The bench chart: a PNG of the run's ratios, only of the rows that have one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import chart

PNG = b"\x89PNG\r\n\x1a\n"


def results(**scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "date": "2026-12-01",
        "mode": "full",
        "machine": {"cpus": 2},
        "scenarios": {k: {"rows": rows} for k, rows in scenarios.items()},
    }


def test_ratio_rows_take_every_row_with_a_ratio() -> None:
    data = results(
        json=[
            {"target": "direct", "conns": 1, "ops_per_s": 100.0},
            {"target": "nginx", "conns": 1, "x_direct": 0.9},
            {"target": "gw1", "conns": 1, "x_direct": 0.2, "x_nginx": 0.22},
        ],
        churn=[{"target": "direct", "conns": 1}],
        resume=[{"target": "gw1", "conns": 1, "x_direct": 3.0}],  # not a ratio panel
    )
    assert chart.ratio_rows(data) == {
        "json": [("nginx\n1 conn", {"x_direct": 0.9}), ("gw1\n1 conn", {"x_direct": 0.2, "x_nginx": 0.22})]
    }


def test_write_draws_a_png_and_nothing_without_ratios(tmp_path: Path) -> None:
    data = results(
        json=[{"target": "gw1", "conns": c, "x_direct": 0.1 * c, "x_nginx": 0.12 * c} for c in (1, 64)],
        sse=[{"target": "gw3+lb", "conns": 1, "x_direct": 0.05}],
    )
    path = chart.write(data, tmp_path / "run.png")
    assert path == tmp_path / "run.png" and path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    assert chart.write(results(json=[{"target": "direct", "conns": 1}]), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
