"""Static checks of docker-compose.yml: services, gateway settings, healthchecks, ordering, volumes, ports.

`docker compose config` (or `docker-compose`) must be on PATH (scripts/setup installs it;
missing = failure); nothing is started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy_files import (
    COMPOSE,
    DEFAULT_DRAIN_TIMEOUT,
    GATEWAY_SERVICES,
    HAPROXY_CFG,
    ROOT,
    SENTINEL_OVERRIDE,
    SENTINEL_SERVICES,
    compose_services,
    final_stage,
    healthcheck_python,
)

pytestmark = pytest.mark.usefixtures("deploy_files_exist")


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
    for name in (*GATEWAY_SERVICES, "redis", "everything", *SENTINEL_SERVICES):
        assert not services[name].get("ports"), f"{name} should be reached through the LB only"


def compose_cmd() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` on PATH: run scripts/setup")


def test_compose_matches_schema_if_docker_compose_available(tmp_path: Path) -> None:
    """`docker compose config -q` (or v1 `docker-compose`) validates the whole file."""
    proc = subprocess.run(
        [*compose_cmd(), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


# --- profile `sentinel` + deploy/compose/sentinel.yml ----------------------------------------------


def sentinel_conf(service: dict[str, Any]) -> dict[str, str]:
    """The config lines a Sentinel service writes before it starts: directive -> arguments."""
    script = service["command"][-1]
    lines = re.findall(r"'([^']*)'", script.split(">", 1)[0])
    return {" ".join(line.split()[:2]) if line.startswith("sentinel ") else line.split()[0]: line for line in lines}


def test_sentinel_profile_services() -> None:
    services = compose_services()
    for name, svc in services.items():
        assert svc.get("profiles", []) == (["sentinel"] if name in SENTINEL_SERVICES else []), name
    assert services["redis-primary"]["image"].startswith("redis:7")
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis-primary", "6379"]
    sentinels = [n for n in SENTINEL_SERVICES if n.startswith("sentinel")]
    assert len(sentinels) == 3, "three Sentinels: a majority survives the loss of one"
    for name in sentinels:
        svc = services[name]
        conf = sentinel_conf(svc)
        _, _, master, host, port, quorum = conf["sentinel monitor"].split()
        assert (master, host, port) == ("mymaster", "redis-primary", "6379")
        assert 2 <= int(quorum) <= len(sentinels)
        assert conf["port"] == "port 26379"
        assert "sentinel resolve-hostnames" in conf  # it monitors a compose service name
        assert svc["command"][-1].rstrip().endswith("--sentinel")
        assert svc["depends_on"]["redis-primary"]["condition"] == "service_healthy"
        assert svc["healthcheck"]["test"] == ["CMD", "redis-cli", "-p", "26379", "ping"]


def test_sentinel_override_points_the_gateways_at_the_sentinels(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import Settings

    services = compose_services()
    override = yaml.safe_load(SENTINEL_OVERRIDE.read_text())["services"]
    assert set(override) == set(GATEWAY_SERVICES)
    for name in GATEWAY_SERVICES:
        env = env_dict(services[name]["environment"]) | env_dict(override[name]["environment"])
        for key in [k for k in os.environ if k.startswith("MCPGW_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert not settings.redis_cluster and not settings.embedded_store
        for host, port in settings.sentinels():
            assert host in SENTINEL_SERVICES and host.startswith("sentinel"), host
            assert f"port {port}" == sentinel_conf(services[host])["port"]
        assert {h for h, _ in settings.sentinels()} == {"sentinel1", "sentinel2", "sentinel3"}
        master = sentinel_conf(services["sentinel1"])["sentinel monitor"].split()[2]
        assert settings.redis_sentinel_master == master
        deps = override[name]["depends_on"]
        assert all(deps[s]["condition"] == "service_healthy" for s in ("sentinel1", "sentinel2", "sentinel3"))


def test_sentinel_profile_renders_with_docker_compose() -> None:
    proc = subprocess.run(
        [*compose_cmd(), "-f", str(COMPOSE), "-f", str(SENTINEL_OVERRIDE), "--profile", "sentinel", "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)["services"]
    assert set(SENTINEL_SERVICES) <= set(rendered)
    for name in GATEWAY_SERVICES:
        assert env_dict(rendered[name]["environment"])["MCPGW_REDIS_SENTINEL"].count(":26379") == 3
