"""Metrics and error messages on the open internet (issue 35): `/metrics` only on its own
listener, no upstream credential or query string in any label, and store failures reach
clients (and `/readyz`) as a generic message with a correlation id, the details in the log.

Real processes: an SDK upstream, a gateway replica, a private redis-server killed mid-test."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import StartGateways, StartSdkUpstream
from tests.integration.procs import ProcessGroup, free_port
from tests.integration.redis_topologies import start_node

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def test_metrics_on_their_own_port_without_secrets_and_generic_store_errors(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    procs: ProcessGroup,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    upstream = sdk_upstream()
    secret = upstream.replace("http://", "http://svc:hunter2@") + "?token=s3cr3t"
    node = start_node(procs, tmp_path, free_port())
    [gw] = gateway_cluster(1, {"default": secret}, key_prefix, ["--redis-url", f"redis://127.0.0.1:{node.port}"])
    async with httpx.AsyncClient(timeout=15) as http:
        first = await http.post(gw.url, headers=HEADERS, json=INIT)
        assert first.status_code == 200, first.text
        assert (await http.get(f"{gw.base_url}/metrics")).status_code == 404  # not on the MCP port
        scraped = await http.get(gw.metrics_url)
        assert scraped.status_code == 200
        labels = [
            value
            for family in text_string_to_metric_families(scraped.text)
            for sample in family.samples
            for value in sample.labels.values()
        ]
        assert labels and not [v for v in labels if "hunter2" in v or "s3cr3t" in v or "svc" in v or "?" in v]
        assert "hunter2" not in scraped.text and "s3cr3t" not in scraped.text
        upstream_labels = {
            sample.labels["upstream"]
            for family in text_string_to_metric_families(scraped.text)
            for sample in family.samples
            if sample.name == "mcpgw_upstream_healthy"
        }
        assert upstream_labels == {upstream.split("//")[1].split("/")[0]}  # host:port

        node.kill()  # the store goes away: clients get a generic message and a correlation id
        second = await http.post(gw.url, headers=HEADERS, json=INIT)
        ready = await http.get(f"{gw.base_url}/readyz")
    assert second.status_code == 503, second.text
    message = second.json()["error"]["message"]
    assert message.startswith("session store unavailable (correlation id "), message
    assert ready.status_code == 503 and ready.json()["status"] == "store unavailable", ready.text
    for body in (second.text, ready.text):
        assert str(node.port) not in body and "Error" not in body and "127.0.0.1" not in body, body
    # The details are in the replica's log, under the correlation id the client got.
    cid = second.json()["error"]["data"]["correlationId"]
    log = gw.proc.log_path.read_text()
    assert re.search(rf"correlation id {cid}\]: .*{node.port}", log), log[-2000:]
