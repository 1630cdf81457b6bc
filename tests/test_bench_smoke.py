"""The benchmark suite runs end to end in smoke mode and produces well-formed results.

No timing assertions: only that every scenario produced numbers (> 0) and no errors. Smoke mode
needs Redis (like the rest of the suite) and no nginx, wrk or py-spy: one gateway replica, the
fast upstream, a few requests per scenario.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(90)


def test_bench_smoke(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-readme", "--redis-url", redis_url, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, f"bench --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    assert results["mode"] == "smoke"
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the chart beside the JSON
    assert "1/" in proc.stderr and "step times:" in proc.stderr  # progress on stderr
    assert results["machine"]["cpus"] > 0
    sc = results["scenarios"]

    json_rows = {(r["target"], r["conns"]): r for r in sc["json"]["rows"]}
    assert {t for t, _ in json_rows} >= {"direct", "gw1"}
    for row in json_rows.values():
        assert row["ops"] > 0 and row["ops_per_s"] > 0, row
        assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"], row
        assert row["errors"] == 0, row
    assert all(r["x_direct"] > 0 for r in sc["json"]["rows"] if r["target"] != "direct")

    assert sc["client_ceiling"]["ops_per_s"] > 0

    reqpath = {r["target"]: r for r in sc["reqpath"]["rows"]}
    assert reqpath["gw1"]["cpu_us_per_call"] > 0 and reqpath["gw1"]["aiohttp_x_direct"] > 0
    assert reqpath["gw1"]["redis_per_call"]["by_command"].get("hmget", 0) > 0  # the session load (claim script)
    assert reqpath["gw1"]["redis_per_call"]["round_trips"] > 0
    assert reqpath["gw1"]["redis_per_sse_event"]["by_command"].get("xadd", 0) > 0  # events land in the log

    for row in sc["sse"]["rows"]:
        assert row["calls_per_s"] > 0 and row["events_per_s"] > 0, row
        assert row["e2e_p50_ms"] > 0 and row["event_latency_p50_ms"] > 0, row
        assert row["errors"] == 0, row

    for row in sc["churn"]["rows"]:
        assert row["sessions_per_s"] > 0 and row["iteration_p50_ms"] > 0, row
        assert row["errors"] == 0, row

    resume = sc["resume"]
    assert resume["errors"] == 0, resume
    assert resume["reps"] > 0
    assert 0 < resume["first_p50_ms"] <= resume["last_p50_ms"]

    for idle in sc["idle"]["phases"]:
        assert idle["open_errors"] == 0, idle
        assert idle["opened"] == idle["streams"] == idle["alive_after_idle"] > 0, idle
        assert idle["rss_after_kb"] > 0 and idle["rss_before_kb"] > 0
        assert idle["keepalives_per_s"] > 0  # keep-alives flowed on the idle streams

    for client in ("aiohttp", "httpx", "http1"):
        assert sc["clients"][client]["events_per_s"] > 0
        assert sc["clients"][client]["stream_p99_ms"] > 0

    names = {t["target"] for t in results["targets"]}
    assert any(n.startswith("added p50") for n in names)
    assert all(isinstance(t["met"], bool) for t in results["targets"])
