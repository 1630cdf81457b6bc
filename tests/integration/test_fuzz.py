"""≥10,000 malformed requests against three replicas: documented statuses only, no tracebacks,
no cross-session data, and the replicas still serve a normal client afterwards."""

from __future__ import annotations

from scripts.fuzz_http import fuzz
from tests.integration.clients import sdk_client, text_of
from tests.integration.conftest import NO_CLIENT_LIMITS, StartGateways, StartSdkUpstream
from tests.integration.test_failover import GW_ARGS


async def test_http_fuzz_against_three_replicas(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    # one address sends 10,000 requests: the per-client limits (tested on their own) would answer most with 429
    args = (*GW_ARGS, *NO_CLIENT_LIMITS, "--log-level", "error")
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, args)
    report = await fuzz([g.url for g in gateways], 10_000, seed=7)
    print(f"fuzz: {report.sent} answered, statuses {dict(report.statuses)}")
    assert not report.violations, report.violations[:10]
    assert report.sent + report.statuses[0] >= 10_000
    for gateway in gateways:
        async with sdk_client(gateway.url) as (client, _):
            assert text_of(await client.call_tool("echo", {"text": "still fine"})) == "still fine"
