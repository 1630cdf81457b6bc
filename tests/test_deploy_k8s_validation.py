"""Kubernetes manifests as a whole: JSON-schema validation, kustomizations, `kustomize build`.

Objects are validated offline against the JSON schemas that `kubernetes-validate` ships;
`kubectl kustomize` / `kustomize` must be on PATH (scripts/setup installs it; missing = failure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.deploy_files import (
    K8S,
    K8S_VERSION,
    ROOT,
    all_k8s_objects,
    base_object,
)

pytestmark = pytest.mark.usefixtures("deploy_files_exist")
OVERLAYS = ("overlays/demo", "overlays/sentinel", "overlays/managed-cluster")


def kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


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
    assert {p.parent.relative_to(K8S).as_posix() for p in found} >= {"base", "redis", *OVERLAYS}
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


@pytest.mark.parametrize("target", ["base", "redis", *OVERLAYS])
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


def kustomize_build(target: str) -> list[dict[str, Any]]:
    cmd = kustomize_cmd()
    if cmd is None:
        pytest.fail("neither kustomize nor kubectl on PATH: run scripts/setup")
    proc = subprocess.run([*cmd, str(K8S / target)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def overlay_settings(target: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Settings a gateway pod of the overlay gets from its ConfigMap and Secret (envFrom)."""
    from gateway.config import Settings

    docs = kustomize_build(target)
    env = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    env |= next(d for d in docs if d["kind"] == "Secret")["stringData"]
    for key in [k for k in os.environ if k.startswith("MCPGW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_sentinel_overlay_asks_three_sentinels(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = overlay_settings("overlays/sentinel", monkeypatch)
    sentinels = settings.sentinels()
    assert len(sentinels) >= 3 and len({h for h, _ in sentinels}) == len(sentinels)
    assert all(port == 26379 for _, port in sentinels)
    assert settings.redis_sentinel_master and not settings.redis_cluster and not settings.embedded_store


def test_managed_cluster_overlay_is_a_tls_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = overlay_settings("overlays/managed-cluster", monkeypatch)
    assert settings.redis_cluster and not settings.sentinels()
    parts = urlsplit(settings.redis_url)
    assert parts.scheme == "rediss" and parts.hostname and parts.password  # TLS and AUTH to a managed service
    assert parts.path.strip("/") in ("", "0")
