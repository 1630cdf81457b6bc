"""Put gateway replicas between a conformance client under test and the suite's test server.

    python -m interop.via_gateway [--replicas 3] -- CLIENT ARGV... SERVER_URL

The conformance suite runs `--command` with the per-scenario server URL appended. Given this
module as the command's prefix, the URL becomes the upstream of `--replicas` gateway processes on
Redis behind HAProxy (round robin, no stickiness), and the client is run against the load balancer
with the suite's environment (MCP_CONFORMANCE_*) untouched. Its exit status is the client's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence

from interop import harness
from tests.integration.procs import REPO_ROOT, ProcessGroup

LOG_DIR = REPO_ROOT / ".pytest_cache" / "interop-logs" / "client-scenarios"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CLIENT ARGV... SERVER_URL")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if len(command) < 2:
        p.error("expected a client command and the server URL after --")
    *client, server_url = command
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "scenario").replace("/", "_")
    group = ProcessGroup(log_dir=LOG_DIR / f"{scenario}-{secrets.token_hex(3)}")
    try:
        # the scenario's server scores every request it gets: the gateway must send none of its own
        # (no era probe; the server speaks whatever era the client under test speaks)
        lb_url, _ = harness.start_stack(group, server_url, args.replicas, extra=("--upstream-era", "default=both"))
        return subprocess.run([*client, lb_url], check=False).returncode
    finally:
        group.stop_all()


if __name__ == "__main__":
    sys.exit(main())
