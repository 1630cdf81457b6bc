"""What the Kubernetes base and demo Redis manifests say: probes, env, shutdown timing, security, HPA, PDB."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy_files import (
    DEFAULT_DRAIN_TIMEOUT,
    K8S,
    all_k8s_objects,
    base_object,
    k8s_docs,
)

pytestmark = pytest.mark.usefixtures("deploy_files_exist")


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


def test_deployment_probes_ports_and_replicas() -> None:
    deployment = base_object("Deployment")
    assert deployment["spec"]["replicas"] == 3
    container = gateway_container()
    ports = [p["containerPort"] for p in container["ports"]]
    assert ports == [8080, 9464]  # MCP, metrics (issue 35: /metrics is not on the MCP port)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert resolve_port(container, "metrics") == int(annotations["prometheus.io/port"]) == 9464
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
