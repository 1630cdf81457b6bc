"""deploy/README.md: the commands it gives name real compose services and kustomizations."""

from __future__ import annotations

import re

import pytest

from tests.deploy_files import (
    DEPLOY_README,
    K8S,
    compose_services,
)

pytestmark = pytest.mark.usefixtures("deploy_files_exist")


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
