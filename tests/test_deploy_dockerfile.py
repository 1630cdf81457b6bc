"""Static checks of the Dockerfile and .dockerignore: entrypoint, port, stages, user, healthcheck.

The healthcheck one-liner is run against a local stub; nothing here needs Docker.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
import tomllib
from typing import Any

import pytest

from tests.deploy_files import (
    DOCKERIGNORE,
    ROOT,
    base_object,
    dockerfile_instructions,
    exec_form,
    final_stage,
    healthcheck_python,
)

pytestmark = pytest.mark.usefixtures("deploy_files_exist")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def run_healthcheck_against(code: str, status: int) -> int:
    """Run a healthcheck one-liner against a local stub whose /healthz answers `status`."""
    handler = type("H", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert "127.0.0.1:8080" in code, "healthcheck should probe 127.0.0.1:8080"
        patched = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        proc = subprocess.run([sys.executable, "-c", patched], capture_output=True, timeout=20)
        return proc.returncode
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_entrypoint_is_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = [args for ins, args in final_stage() if ins == "ENTRYPOINT"]
    assert len(entry) == 1, "exactly one ENTRYPOINT in the runtime stage"
    program = exec_form(entry[0])
    assert program == ["mcp-gateway"]
    assert program[0] in scripts, f"{program[0]} is not a [project.scripts] entry: {sorted(scripts)}"


def test_dockerfile_cmd_listens_on_exposed_port() -> None:
    stage = final_stage()
    cmd = exec_form(next(args for ins, args in stage if ins == "CMD"))
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    port = int(cmd[cmd.index("--port") + 1])
    exposed = [int(p.split("/")[0]) for ins, args in stage if ins == "EXPOSE" for p in args.split()]
    assert exposed == [8080]
    assert port == 8080


def test_dockerfile_multistage_runtime_copies_only_venv() -> None:
    instrs = dockerfile_instructions()
    args = {m.group(1): m.group(2) for ins, a in instrs if ins == "ARG" for m in [re.match(r"(\w+)=(\S+)", a)] if m}
    froms = [a.split() for ins, a in instrs if ins == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for f in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f[0])
        assert image == "python:3.11-slim", image
    stages = [f[2] for f in froms if len(f) == 3 and f[1].upper() == "AS"]
    runtime = final_stage()
    copies = [a for ins, a in runtime if ins == "COPY"]
    assert copies, "runtime stage copies the venv from the builder"
    for copy in copies:
        m = re.match(r"--from=(\S+)\s+(\S+)\s+(\S+)$", copy)
        assert m, f"runtime stage copies something other than a builder artefact: {copy}"
        assert m.group(1) in stages[:-1]
        assert m.group(2) == m.group(3) == "/opt/venv"
    assert not any(ins in ("RUN", "ADD") and "pip" in a for ins, a in runtime), "no pip in runtime"
    for ins, a in instrs:
        assert not (ins == "RUN" and re.search(r"\[[^\]]*test", a)), f"test extras installed: {a}"


def test_dockerfile_runs_as_non_root_user() -> None:
    users = [args for ins, args in final_stage() if ins == "USER"]
    assert users, "runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "numeric UID lets Kubernetes runAsNonRoot verify the user"
    pod = base_object("Deployment")["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == user


def test_dockerfile_stopsignal_and_healthcheck() -> None:
    stage = final_stage()
    assert [a for ins, a in stage if ins == "STOPSIGNAL"] == ["SIGTERM"]
    health = [a for ins, a in stage if ins == "HEALTHCHECK"]
    assert len(health) == 1
    opts, _, cmd = health[0].partition("CMD ")
    assert "--interval=" in opts and "--timeout=" in opts
    code = healthcheck_python(exec_form(cmd.strip()))
    assert "/healthz" in code
    compile(code, "<healthcheck>", "exec")
    assert run_healthcheck_against(code, 200) == 0
    assert run_healthcheck_against(code, 503) != 0


def test_dockerignore_keeps_build_inputs_and_drops_the_rest() -> None:
    patterns = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    for excluded in (".git", ".venv", "tests"):
        assert excluded in patterns, f"{excluded} should not be sent to the build"
    copied = {
        src for ins, a in dockerfile_instructions() if ins == "COPY" and "--from" not in a for src in a.split()[:-1]
    }
    assert copied >= {"pyproject.toml", "gateway"}
    for src in copied:
        assert src not in patterns and f"{src}/" not in patterns, f"{src} is COPYed but ignored"
