"""A PNG of a run's ratios, written beside its JSON: what people look at first.

One panel per scenario with ratios (scenario rate through the gateway / the same rate direct, and
/ through nginx), one bar group per target (gw1, gwN+lb, nginx) and connection count; a dashed
line at 1.0 (as fast as the baseline). Needs matplotlib (`pip install -e '.[bench]'`; bench/setup).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

# Scenario key -> (panel title, the rate the ratios compare).
PANELS: dict[str, tuple[str, str]] = {
    "json": ("1. tools/call -> JSON (ops/s)", "ops_per_s"),
    "json_sdk": ("1b. tools/call -> SDK server (ops/s)", "ops_per_s"),
    "sse": ("2. tools/call -> SSE (calls/s)", "calls_per_s"),
    "churn": ("3. session churn (sessions/s)", "sessions_per_s"),
}
BASELINES = (("x_direct", "vs direct", "#4c72b0"), ("x_nginx", "vs nginx", "#dd8452"))


def ratio_rows(results: dict[str, Any]) -> dict[str, list[tuple[str, dict[str, float]]]]:
    """Per scenario: (label 'target, N conns', {ratio name: value}) for every row that has a ratio."""
    out: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for key in PANELS:
        for row in results.get("scenarios", {}).get(key, {}).get("rows", []):
            ratios = {name: row[name] for name, _, _ in BASELINES if row.get(name) is not None}
            if ratios:
                out.setdefault(key, []).append((f"{row['target']}\n{row['conns']} conn", ratios))
    return out


def write(results: dict[str, Any], path: Path) -> Path | None:
    """Draw the ratios of `results` into `path` (PNG); None when the run has no ratio to draw."""
    panels = ratio_rows(results)
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels) + 0.8), squeeze=False)
    width = 0.38
    for ax, (key, rows) in zip(axes[:, 0], panels.items(), strict=True):
        present = [b for b in BASELINES if any(b[0] in ratios for _, ratios in rows)]  # no empty legend entries
        for i, (name, label, colour) in enumerate(present):
            xs = [j + (i - (len(present) - 1) / 2) * width for j in range(len(rows))]
            values = [ratios.get(name, 0.0) for _, ratios in rows]
            bars = ax.bar(xs, values, width, label=label, color=colour)
            ax.bar_label(bars, labels=[f"{v:.2f}x" if v else "" for v in values], fontsize=7, padding=2)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
        ax.set_title(PANELS[key][0], fontsize=10, loc="left")
        ax.set_ylabel("ratio")
        ax.set_ylim(0, max(1.15, max(max(r.values()) for _, r in rows) * 1.25))
        ax.legend(fontsize=8, loc="upper right")
    machine = results.get("machine", {})
    fig.suptitle(
        f"mcp-gateway bench {results.get('date', '')} ({results.get('mode', '')}, {machine.get('cpus', '?')} CPUs): "
        "throughput ratio, 1.0 = as fast as the baseline",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
