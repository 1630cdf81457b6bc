"""bench.tracing_cost: which replicas are traced, and the table of a run (the run itself is
`python -m bench.tracing_cost`, minutes long: bench/README.md "Tracing cost")."""

from __future__ import annotations

from bench import tracing_cost


def test_only_the_traced_targets_get_otel_variables() -> None:
    sink = tracing_cost.Sink()
    sink.url = "http://127.0.0.1:9"
    for untraced in ("baseline", "off"):  # nothing of OpenTelemetry, only the metrics listener kept off
        assert not any(name.startswith("OTEL_") for name in tracing_cost.gateway_env(untraced, sink))
    on = tracing_cost.gateway_env("on", sink)
    assert on["OTEL_EXPORTER_OTLP_ENDPOINT"] == sink.url and "OTEL_TRACES_SAMPLER" not in on
    assert tracing_cost.gateway_env("unsampled", sink)["OTEL_TRACES_SAMPLER"] == "always_off"


def test_table_lists_every_target_against_the_baseline() -> None:
    row = {"cpu_us_per_call": 400.0, "min": 390.0, "max": 410.0, "ops_per_s": 900.0, "x_baseline": 1.0}
    out = {
        "date": "2026-12-02",
        "cpus": 2,
        "conns": 16,
        "rounds": 5,
        "duration_s": 3.0,
        "commit": "abc1234",
        "baseline_commit": "def5678",
        "sink": {"spans": 10, "exports": 2, "bytes": 100},
        "results": {"json": {t: row for t in tracing_cost.TARGETS}},
    }
    text = tracing_cost.table(out)
    assert "abc1234 against baseline def5678" in text
    for target in tracing_cost.TARGETS:
        assert f"json  {target}" in text
    assert "10 spans in 2 exports" in text
