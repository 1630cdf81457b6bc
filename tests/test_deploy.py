"""Static checks of the deployment files: Dockerfile, docker-compose.yml, HAProxy config, Kubernetes.

Nothing here needs Docker or a cluster. Kubernetes objects are validated offline against the
JSON schemas that `kubernetes-validate` ships; `haproxy -c` and `kubectl kustomize` / `kustomize`
need the binary on PATH (scripts/setup installs it; missing = failure).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
HAPROXY_CFG = ROOT / "deploy" / "compose" / "haproxy.cfg"
K8S = ROOT / "deploy" / "k8s"
K8S_BASE = K8S / "base"
DEPLOY_README = ROOT / "deploy" / "README.md"
K8S_VERSION = "1.30.0"
GATEWAY_SERVICES = ("gateway1", "gateway2", "gateway3")
DEFAULT_DRAIN_TIMEOUT = 10.0  # gateway.config.Settings.drain_timeout default


# ---------------------------------------------------------------------------------------------
# helpers


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services = load_compose()["services"]
    assert isinstance(services, dict)
    return services


def env_dict(env: Any) -> dict[str, str]:
    """Compose `environment:` as a mapping or as a list of `KEY=VALUE`."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    out: dict[str, str] = {}
    for item in env:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def parse_duration(value: Any) -> float:
    """Compose durations: `20s`, `1m30s`, `1h`, `500ms`, or a bare number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def k8s_docs(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in a directory tree (kustomization files excluded)."""
    docs = []
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path, doc) for doc in load_yaml_docs(path))
    return docs


def base_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in k8s_docs(K8S_BASE) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {K8S_BASE}, found {len(found)}"
    return found[0]


def gateway_container() -> dict[str, Any]:
    containers = base_object("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"named port {port!r} not declared by container {container['name']}")


def configmap_env() -> dict[str, str]:
    return {str(k): str(v) for k, v in base_object("ConfigMap")["data"].items()}


def configured_drain_timeout() -> float:
    return float(configmap_env().get("MCPGW_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT))


def prestop_sleep_seconds(container: dict[str, Any]) -> float:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:  # native sleep action (Kubernetes >= 1.30)
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    if command[0] in ("sh", "/bin/sh", "bash", "/bin/bash"):
        command = shlex.split(command[-1])
    assert Path(command[0]).name == "sleep", f"preStop is not a sleep: {command}"
    return float(command[1])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    out = []
    for item in logical:
        instr, _, args = item.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instrs = dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instrs) if ins == "FROM")
    return instrs[last_from:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_python(command: list[str]) -> str:
    """The code of a `python -c CODE` (possibly CMD-prefixed) healthcheck command."""
    if command and command[0] in ("CMD", "CMD-SHELL"):
        command = command[1:]
    assert command[0].startswith("python"), f"healthcheck does not run python: {command}"
    assert command[1] == "-c"
    return command[2]


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


def kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


# ---------------------------------------------------------------------------------------------
# Dockerfile


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


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_has_all_services() -> None:
    services = compose_services()
    assert {"redis", "everything", "lb", *GATEWAY_SERVICES} <= set(services)
    gateways = sorted(n for n, s in services.items() if s.get("build") in (".", {"context": "."}))
    assert gateways == list(GATEWAY_SERVICES), "exactly three gateway replicas built from ."
    assert services["redis"]["image"].startswith("redis:7")
    assert services["lb"]["image"].startswith("haproxy:2.8")
    everything = services["everything"]
    assert everything["image"] == "node:22-slim"
    assert "@modelcontextprotocol/server-everything@2026.8.31" in everything["command"]
    assert everything["command"][-1] == "streamableHttp"
    assert env_dict(everything.get("environment"))["PORT"] == "3001"


def test_compose_gateway_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import Settings

    services = compose_services()
    redis_url = "redis://redis:6379/0"
    for name in GATEWAY_SERVICES:
        env = env_dict(services[name].get("environment"))
        assert env["MCPGW_REDIS_URL"] == redis_url
        assert env["MCPGW_UPSTREAM"] == "default=http://everything:3001/mcp"
        assert env["MCPGW_HOST"] == "0.0.0.0"
        for key in [k for k in os.environ if k.startswith("MCPGW_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            assert key.startswith("MCPGW_"), f"{name}: unexpected env {key}"
            assert key[len("MCPGW_") :].lower() in Settings.model_fields, f"{name}: unknown {key}"
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.port == 8080
        pools = settings.pools()
        assert pools and pools[0].name == "default"
        for url in pools[0].instances:
            host = urlsplit(url).hostname
            assert host in services, f"upstream host {host} is not a compose service"
    assert urlsplit(redis_url).hostname in services


def test_compose_healthchecks() -> None:
    services = compose_services()
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    dockerfile_health = next(a for ins, a in final_stage() if ins == "HEALTHCHECK")
    for name in GATEWAY_SERVICES:
        code = healthcheck_python(services[name]["healthcheck"]["test"])
        assert "/healthz" in code
        assert code in dockerfile_health, f"{name} healthcheck differs from the Dockerfile's"
        compile(code, f"<{name} healthcheck>", "exec")


def test_compose_depends_on_conditions() -> None:
    services = compose_services()
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    for name in GATEWAY_SERVICES:
        deps = services[name]["depends_on"]
        assert isinstance(deps, dict), "long form with conditions"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["everything"]["condition"] in ("service_started", "service_healthy")
    lb_deps = services["lb"]["depends_on"]
    assert set(GATEWAY_SERVICES) <= set(lb_deps)


def test_compose_stop_grace_period_exceeds_drain_timeout() -> None:
    services = compose_services()
    for name in GATEWAY_SERVICES:
        svc = services[name]
        drain = float(env_dict(svc["environment"]).get("MCPGW_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT))
        assert parse_duration(svc["stop_grace_period"]) > drain
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_compose_volumes_are_relative_and_exist() -> None:
    services = compose_services()
    mounted = []
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else str(vol).split(":")[0]
            if not source.startswith((".", "/", "~")):
                continue  # named volume
            assert not source.startswith(("/", "~")), f"{name}: host-only absolute path {source}"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            mounted.append((name, (ROOT / source).resolve()))
    assert ("lb", HAPROXY_CFG.resolve()) in mounted, "lb mounts deploy/compose/haproxy.cfg"
    lb_vol = next(v for v in services["lb"]["volumes"] if "haproxy.cfg" in str(v))
    assert str(lb_vol).split(":")[1] == "/usr/local/etc/haproxy/haproxy.cfg"
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert not context.startswith(("/", "~")), f"{name}: absolute build context {context}"
            assert (ROOT / context / "Dockerfile").exists()


def test_compose_ports_only_on_lb() -> None:
    services = compose_services()
    assert "8080:8080" in [str(p) for p in services["lb"]["ports"]]
    for name in (*GATEWAY_SERVICES, "redis", "everything"):
        assert not services[name].get("ports"), f"{name} should be reached through the LB only"


def test_compose_matches_schema_if_docker_compose_available(tmp_path: Path) -> None:
    """`docker compose config -q` (or v1 `docker-compose`) validates the whole file."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose", "-f", str(COMPOSE), "config", "-q"]
    elif shutil.which("docker-compose"):
        cmd = ["docker-compose", "-f", str(COMPOSE), "config", "-q"]
    else:
        pytest.fail("neither `docker compose` nor `docker-compose` on PATH: run scripts/setup")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# HAProxy


def haproxy_lines() -> list[str]:
    lines = []
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def haproxy_seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value)
    assert m, value
    factor = {"us": 1e-6, "ms": 0.001, None: 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(m.group(1)) * factor[m.group(2)]


def test_haproxy_roundrobin_without_stickiness() -> None:
    lines = haproxy_lines()
    assert "balance roundrobin" in lines
    for line in lines:
        word = line.split()[0]
        assert word not in ("cookie", "stick", "stick-table", "appsession", "hash-type"), line
        assert not line.startswith("balance") or line == "balance roundrobin", line
        assert "cookie" not in line.split()[1:], line
    assert "option redispatch" in lines
    retries = [int(line.split()[1]) for line in lines if line.startswith("retries ")]
    assert retries and retries[0] >= 1
    assert "option http-buffer-request" not in lines, "requests must not be buffered"
    assert not any(line.startswith("compression") for line in lines), "SSE must not be compressed"


def test_haproxy_health_check_and_timeouts() -> None:
    lines = haproxy_lines()
    assert "option httpchk" in lines
    assert any(re.fullmatch(r"http-check send meth GET uri /healthz.*", line) for line in lines)
    timeouts = {line.split()[1]: haproxy_seconds(line.split()[2]) for line in lines if line.startswith("timeout ")}
    for name in ("client", "server", "tunnel"):
        assert timeouts[name] >= 3600, f"timeout {name} too short for long-lived SSE"
    # Keep-alive comments come every ~15 s: the idle timeouts must be far above that.
    assert min(timeouts["client"], timeouts["server"]) > 15


def test_haproxy_servers_are_the_gateway_replicas() -> None:
    lines = haproxy_lines()
    servers = [line.split() for line in lines if line.startswith("server ")]
    assert [s[1] for s in servers] == list(GATEWAY_SERVICES)
    for s in servers:
        host, _, port = s[2].rpartition(":")
        assert host == s[1] and port == "8080"
    assert any(line.startswith("default-server") and " check" in f" {line}" for line in lines) or all(
        "check" in s for s in servers
    ), "servers are health-checked"
    binds = [line.split()[1] for line in lines if line.startswith("bind ")]
    assert [b.rpartition(":")[2] for b in binds] == ["8080"]
    lb_ports = compose_services()["lb"]["ports"]
    assert any(str(p).endswith(":8080") for p in lb_ports)


def test_haproxy_config_check(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if not haproxy:
        pytest.fail("haproxy not on PATH: run scripts/setup")
    text = HAPROXY_CFG.read_text()
    for name in GATEWAY_SERVICES:  # service names only resolve inside the compose network
        text = re.sub(rf"\b{name}:8080\b", "127.0.0.1:8080", text)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    proc = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "ALERT" not in output, output


# ---------------------------------------------------------------------------------------------
# Kubernetes


def all_k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    return k8s_docs(K8S)


def test_k8s_objects_match_schemas() -> None:
    docs = all_k8s_objects()
    kinds = {d["kind"] for _, d in docs}
    assert {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Namespace",
    } <= kinds
    for path, doc in docs:
        if path.name.endswith("-patch.yaml"):
            continue  # partial objects, validated after `kustomize build` below
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_k8s_validation_rejects_bad_objects() -> None:
    """The validator really checks (offline): a typo'd field and a wrong type are caught."""
    deployment = base_object("Deployment")
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def kustomizations() -> list[Path]:
    found = sorted(K8S.rglob("kustomization.yaml"))
    assert {p.parent.relative_to(K8S).as_posix() for p in found} >= {"base", "redis", "overlays/demo"}
    return found


def test_kustomizations_list_existing_files_and_no_orphans() -> None:
    referenced: set[Path] = set()
    for kfile in kustomizations():
        k = yaml.safe_load(kfile.read_text())
        assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
        entries = list(k.get("resources", []))
        entries += [p["path"] for p in k.get("patches", []) if "path" in p]
        entries += list(k.get("patchesStrategicMerge", []))
        assert entries, f"{kfile} lists nothing"
        for entry in entries:
            target = (kfile.parent / entry).resolve()
            assert target.exists(), f"{kfile.relative_to(ROOT)} lists missing {entry}"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{entry} is not a kustomization"
            referenced.add(target)
    for path, _ in all_k8s_objects():
        assert path.resolve() in referenced, f"{path.relative_to(ROOT)} is in no kustomization"


@pytest.mark.parametrize("target", ["base", "redis", "overlays/demo"])
def test_kustomize_build_validates(target: str) -> None:
    cmd = kustomize_cmd()
    if cmd is None:
        pytest.fail("neither kustomize nor kubectl on PATH: run scripts/setup")
    proc = subprocess.run([*cmd, str(K8S / target)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    if target != "overlays/demo":
        return
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    namespace = next(iter(by_kind["Namespace"]))
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace
    services = by_kind["Service"]
    # The secret points at the demo Redis Service, the upstream at the demo MCP server.
    redis_url = urlsplit(by_kind["Secret"]["mcp-gateway-redis"]["stringData"]["MCPGW_REDIS_URL"])
    assert redis_url.scheme == "redis" and redis_url.hostname in services
    assert redis_url.port in [p["port"] for p in services[redis_url.hostname]["spec"]["ports"]]
    upstream = by_kind["ConfigMap"]["mcp-gateway-config"]["data"]["MCPGW_UPSTREAM"]
    for spec in upstream.split(";"):
        for url in spec.partition("=")[2].split(","):
            parts = urlsplit(url)
            assert parts.hostname in services, f"upstream {url} is not a Service of the overlay"
            assert parts.port in [p["port"] for p in services[parts.hostname]["spec"]["ports"]]
    gateway = by_kind["Deployment"]["mcp-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"mcp-gateway:\S+", gateway["image"])


def test_deployment_probes_ports_and_replicas() -> None:
    deployment = base_object("Deployment")
    assert deployment["spec"]["replicas"] == 3
    container = gateway_container()
    ports = [p["containerPort"] for p in container["ports"]]
    assert ports == [8080]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            assert resolve_port(container, container[probe]["httpGet"]["port"]) == 8080
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0, "a rollout keeps full capacity"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()


def test_deployment_env_from_configmap_and_secret() -> None:
    refs = gateway_container()["envFrom"]
    cm_names = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
    secret_names = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
    assert cm_names == [base_object("ConfigMap")["metadata"]["name"]]
    assert secret_names == [base_object("Secret")["metadata"]["name"]]
    secret = base_object("Secret")
    assert list(secret["stringData"]) == ["MCPGW_REDIS_URL"]
    assert urlsplit(secret["stringData"]["MCPGW_REDIS_URL"]).scheme in ("redis", "rediss")


def test_configmap_and_secret_make_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import Settings

    env = configmap_env() | base_object("Secret")["stringData"]
    for key in [k for k in os.environ if k.startswith("MCPGW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        assert key.startswith("MCPGW_") and key[6:].lower() in Settings.model_fields, key
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.pools()
    assert settings.redis_url
    assert settings.drain_timeout == configured_drain_timeout()
    if settings.workers > 1:
        assert settings.redis_url


def test_no_service_env_links_clash_with_settings() -> None:
    """Kubernetes injects `<SERVICE>_PORT=tcp://...`; a Service named `mcpgw` would break MCPGW_PORT."""
    pod = base_object("Deployment")["spec"]["template"]["spec"]
    if pod.get("enableServiceLinks") is False:
        return
    for _, doc in all_k8s_objects():
        if doc["kind"] == "Service":
            prefix = doc["metadata"]["name"].upper().replace("-", "_")
            assert not prefix.startswith("MCPGW"), doc["metadata"]["name"]


def test_termination_grace_covers_prestop_and_drain() -> None:
    pod = base_object("Deployment")["spec"]["template"]["spec"]
    container = gateway_container()
    sleep = prestop_sleep_seconds(container)
    assert sleep >= 1
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > sleep + configured_drain_timeout(), (grace, sleep, configured_drain_timeout())


def test_deployment_security_and_resources() -> None:
    pod = base_object("Deployment")["spec"]["template"]["spec"]
    container = gateway_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"]


def test_service_targets_gateway_pods_without_affinity() -> None:
    service = base_object("Service")
    spec = service["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP"
    assert spec.get("sessionAffinity", "None") == "None"
    assert [p["port"] for p in spec["ports"]] == [80]
    container = gateway_container()
    assert resolve_port(container, spec["ports"][0]["targetPort"]) == 8080
    labels = base_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= labels.items()


def test_hpa_targets_deployment() -> None:
    hpa = base_object("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = base_object("Deployment")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 10
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    cpu = [m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu == [{"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}]
    assert "cpu" in gateway_container()["resources"]["requests"], "Utilization needs a CPU request"


def test_pdb_protects_gateway_pods() -> None:
    pdb = base_object("PodDisruptionBudget")["spec"]
    labels = base_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    replicas = base_object("Deployment")["spec"]["replicas"]
    if "minAvailable" in pdb:
        assert 2 <= int(pdb["minAvailable"]) < replicas
    else:
        assert pdb["maxUnavailable"] == 1


def test_redis_demo_manifests() -> None:
    docs = {d["kind"]: d for _, d in k8s_docs(K8S / "redis")}
    assert set(docs) == {"Deployment", "Service"}
    deployment, service = docs["Deployment"], docs["Service"]
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("redis:7")
    port = resolve_port(container, service["spec"]["ports"][0]["targetPort"])
    assert port == service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# ---------------------------------------------------------------------------------------------
# deploy/README.md


def test_deploy_readme_commands_refer_to_real_things() -> None:
    text = DEPLOY_README.read_text()
    assert "kubectl apply -k deploy/k8s/overlays/demo" in text
    assert (K8S / "overlays" / "demo" / "kustomization.yaml").exists()
    services = compose_services()
    named = 0
    for m in re.finditer(r"docker compose (?:kill|stop|start|restart|logs)((?: [\w-]+)+)", text):
        words = m.group(1).split()
        words = [w for i, w in enumerate(words) if not w.startswith("-") and not (i and words[i - 1] == "-s")]
        for word in words:
            assert word in services, f"README names unknown compose service {word}"
            named += 1
    assert named >= 2
    assert "docker compose kill -s SIGKILL gateway2" in text
    assert "{<session id>}" in text or "hash tag" in text.lower()


@pytest.fixture(autouse=True)
def _files_exist() -> Iterator[None]:
    for path in (DOCKERFILE, DOCKERIGNORE, COMPOSE, HAPROXY_CFG, DEPLOY_README):
        assert path.exists(), f"{path.relative_to(ROOT)} is missing"
    yield
