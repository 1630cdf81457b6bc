"""The conformance suite's client scenarios, direct and through the gateway.

Each scenario starts the suite's own test server, which scores what a client does on the wire. The
same client under test (`interop/conformance_client.py`, on the official Python SDK) runs once
against that server directly and once through gateway replicas behind HAProxy
(`interop/via_gateway.py`); the checks must be identical, as for the server scenarios.

Not run, because they do not apply to a proxy: `auth/*` (they score the client's OAuth discovery
against the test server's own protected-resource metadata; the gateway is a resource server with
its own issuer, `--auth-issuer`, not a relay of an upstream's authorization) and the `sep-2640-*`
extension scenarios (client-side skill fetching, no MCP transport in between).

Compared: every verdict (SUCCESS, FAILURE, WARNING, SKIPPED) and the client's exit status, which the
suite reports beside the checks. Not compared: the INFO records, the test server's log of each
request it received; through the gateway they also hold the replicas' health probes (a GET every
`--health-interval` seconds per replica), so their number depends on timing, not on the client.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from interop.harness import CONFORMANCE, INTEROP, NODE, Checks, ScenarioResult, node_env, require_installed
from tests.integration.procs import REPO_ROOT

CLIENT = INTEROP / "conformance_client.py"

# (scenario, spec version): every non-auth client scenario at each version it applies to
# (`conformance list --client`, suite 0.2.0-alpha.12).
SCENARIOS: tuple[tuple[str, str], ...] = (
    ("initialize", "2025-06-18"),
    ("initialize", "2025-11-25"),
    ("tools_call", "2025-06-18"),
    ("tools_call", "2025-11-25"),
    ("tools_call", "2026-07-28"),
    ("elicitation-sep1034-client-defaults", "2025-11-25"),
    ("sse-retry", "2025-11-25"),
    ("json-schema-2020-12-preservation", "2025-11-25"),
    ("json-schema-2020-12-preservation", "2026-07-28"),
    ("request-metadata", "2026-07-28"),
    ("sep-2322-client-request-state", "2026-07-28"),
    ("http-standard-headers", "2026-07-28"),
    ("http-custom-headers", "2026-07-28"),
    ("http-invalid-tool-headers", "2026-07-28"),
    ("json-schema-ref-no-deref", "2026-07-28"),
)


def client_command(via_gateway: bool, replicas: int = 3) -> str:
    """The `--command` the suite runs (it appends the server URL)."""
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(CLIENT))}"
    if via_gateway:
        wrapper = f"{shlex.quote(sys.executable)} -m interop.via_gateway --replicas {replicas} --"
        command = f"{wrapper} {command}"
    return command


def run_client_scenario(scenario: str, version: str, command: str, timeout: float = 120) -> ScenarioResult:
    """One `conformance client` run and its checks; an error if the suite wrote none."""
    with tempfile.TemporaryDirectory(prefix="conformance-client-") as out:
        argv = [str(NODE), str(CONFORMANCE), "client", "--command", command, "--scenario", scenario]
        argv += ["--spec-version", version, "-o", out]
        # the environment (REDIS_URL included) reaches interop/via_gateway.py through node_env()
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=node_env(), cwd=REPO_ROOT, check=False
        )
        files = sorted(Path(out).glob("*/checks.json"))
        if not files:
            raise RuntimeError(f"conformance client {scenario} wrote no checks:\n{proc.stdout[-3000:]}\n{proc.stderr}")
        records = json.loads(files[0].read_text())
        checks: Checks = Counter((c["id"], c["status"]) for c in records if c["status"] != "INFO")
        exited = re.search(r"CLIENT EXITED WITH ERROR \(code (\d+)\)", proc.stdout + proc.stderr)
        if exited:
            checks[(f"client-exit-code-{exited.group(1)}", "FAILURE")] += 1
        return ScenarioResult(checks)


def run_client_scenarios(
    via_gateway: bool, scenarios: Sequence[tuple[str, str]] = SCENARIOS, replicas: int = 3
) -> dict[str, ScenarioResult]:
    """Results keyed `scenario @version`."""
    require_installed()
    command = client_command(via_gateway, replicas)
    return {f"{name} @{version}": run_client_scenario(name, version, command) for name, version in scenarios}
