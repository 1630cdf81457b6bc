"""The conformance suite's 2026-07-28 server scenarios against server-everything (2025 only), direct
and through three bridging replicas behind HAProxy.

Direct, every scenario fails: server-everything refuses 2026-07-28 requests. Through the gateway,
the scenarios that need no tool, prompt or resource of the suite's own fixture pass; the rest fail
only because server-everything lacks the fixture's tools (`test_*`).
"""

from __future__ import annotations

import pytest

from interop import harness
from tests.integration.procs import ProcessGroup, start_everything

# Scenarios that need nothing of the suite's fixture: each passes through the bridge.
BRIDGED = (
    "caching",
    "dns-rebinding-protection",
    "http-header-validation",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-error",
    "prompts-list",
    "resources-list",
    "server-sse-multiple-streams",
    "sep-2164-resource-not-found",
    "input-required-result-unsupported-methods",
    "input-required-result-missing-input-response",
    "input-required-result-ignore-extra-params",
)
# server-stateless checks that call the fixture's diagnostic tool `test_missing_capability`.
FIXTURE_ONLY = {"sep-2575-server-rejects-undeclared-capability", "sep-2575-missing-capability-http-400"}


@pytest.fixture(autouse=True)
def _npm_packages() -> None:
    try:
        harness.require_installed()
    except harness.MissingPackages as exc:
        pytest.fail(str(exc), pytrace=False)


def test_2026_scenarios_against_server_everything_through_the_bridge(procs: ProcessGroup, key_prefix: str) -> None:
    everything = start_everything(procs)
    via, _ = harness.start_stack(procs, everything, 3, key_prefix)
    scenarios = (*BRIDGED, "server-stateless")
    direct = harness.run_conformance(everything, scenarios, "2026-07-28")
    bridged = harness.run_conformance(via, scenarios, "2026-07-28")
    text, _ = harness.table(direct, bridged)
    print(text)
    assert set(bridged) == set(scenarios), text
    for name in BRIDGED:
        assert bridged[name].failed == 0 and bridged[name].passed > 0, text
        assert direct[name].failed > 0, text  # it is the bridge that makes them pass
    stateless = bridged["server-stateless"].checks
    failing = {check for (check, status) in stateless if status == "FAILURE"}
    assert failing <= FIXTURE_ONLY, failing
    assert sum(n for (_, status), n in stateless.items() if status == "SUCCESS") >= 20, text
