"""Where the deployment files are and how to read them: shared by the tests/test_deploy_*.py modules.

Nothing here needs Docker or a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
HAPROXY_CFG = ROOT / "deploy" / "compose" / "haproxy.cfg"
SENTINEL_OVERRIDE = ROOT / "deploy" / "compose" / "sentinel.yml"
SENTINEL_SERVICES = ("redis-primary", "redis-replica", "sentinel1", "sentinel2", "sentinel3")
K8S = ROOT / "deploy" / "k8s"
K8S_BASE = K8S / "base"
DEPLOY_README = ROOT / "deploy" / "README.md"
K8S_VERSION = "1.30.0"
GATEWAY_SERVICES = ("gateway1", "gateway2", "gateway3")
DEFAULT_DRAIN_TIMEOUT = 10.0  # gateway.config.settings.Settings.drain_timeout default


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


def k8s_docs(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in a directory tree (kustomization files excluded)."""
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path, doc) for doc in load_yaml_docs(path))
    return docs


def base_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in k8s_docs(K8S_BASE) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {K8S_BASE}, found {len(found)}"
    return found[0]


def all_k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    return k8s_docs(K8S)


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


def assert_deploy_files_exist() -> None:
    for path in (DOCKERFILE, DOCKERIGNORE, COMPOSE, HAPROXY_CFG, SENTINEL_OVERRIDE, DEPLOY_README):
        assert path.exists(), f"{path.relative_to(ROOT)} is missing"
