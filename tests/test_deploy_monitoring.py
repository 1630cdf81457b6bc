"""The Grafana dashboard and the Prometheus alert rules use only what `/metrics` serves.

A running app (real uvicorn, real Redis) gets a little traffic so that every labelled metric has
a sample; then every `mcpgw_*` name in a panel or rule must be one of the served sample names,
and every label it groups or filters by must be one of that metric's labels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_env import HEADERS, Env, running_gateway
from tests.integration.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "mcp-gateway.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every scrape target, not by the replica
TARGET_LABELS = {"job", "instance", "le"}  # scrape labels, and the histogram bucket label
METRIC = re.compile(r"\b(mcpgw_[a-z_]+|up)\b(\{[^}]*\})?")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def expressions() -> list[str]:
    panels = [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    return panels + [rule["expr"] for rule in rules()]


def test_dashboard_and_rules_are_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] and p["gridPos"]["w"] <= 24 for p in board["panels"])
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "job"}
    for rule in rules():
        assert re.fullmatch(r"MCPGateway[A-Za-z]+", rule["alert"]), rule
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["expr"].strip()
    topics = " ".join(expressions())
    for needed in ("requests", "request_duration", "active_deliveries", "resumes", "takeovers", "gaps", "store_errors"):
        assert needed in topics, needed
    assert "upstream_healthy" in topics and "limits_hit" in topics


async def served(env: Env, metrics_port: int) -> dict[str, set[str]]:
    """Sample name -> its label names, after traffic that gives every labelled metric a sample."""
    await env.initialize()  # requests, request duration, upstream latency
    too_big = {**HEADERS, "X-Padding": "x" * 40_000}
    assert (await env.client.post(env.mcp, headers=too_big, json={})).status_code == 431  # limits hit
    assert (await env.client.get(f"{env.url}/metrics")).status_code == 404  # not on the MCP port (issue 35)
    text = (await env.client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


async def test_every_metric_and_label_used_is_served(redis_url: str, key_prefix: str) -> None:
    port = free_port()
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix, metrics_port=port) as env:
        names = await served(env, port)
    assert "mcpgw_limits_hit_total" in names and "mcpgw_upstream_healthy" in names
    for expr in expressions():
        used = METRIC.findall(expr)
        assert used, expr
        labels: set[str] = set()
        for name, selector in used:
            if name in PROMETHEUS_OWN:
                continue
            assert name in names, f"{name} (in {expr!r}) is not served by /metrics"
            labels |= names[name]
            for matcher in re.findall(r"(\w+)\s*=~?", selector):
                assert matcher in names[name] | TARGET_LABELS, f"{name} has no label {matcher!r}"
        for group in GROUPING.findall(expr):
            for label in (part.strip() for part in group.split(",")):
                assert label in labels | TARGET_LABELS, f"no metric of {expr!r} has the label {label!r}"
