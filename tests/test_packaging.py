"""`pip install .` (no extras) is a working gateway; the quick start installs only that.

Checked as mechanisms, without a network: every third-party module `gateway/` imports comes
from a base dependency (or one of theirs), and the gateway imports, builds its app and answers
`--help` with every test-only package made unimportable.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_closure() -> set[str]:
    """The base dependencies and, transitively, what they require (with the extras they name)."""
    todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = normalize(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        for line in metadata.requires(req.name) or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                sub.marker = None
                todo.append(sub)
    return seen


# Modules that may import an optional extra's packages (each is imported only when the feature is on).
OPTIONAL_MODULES = {
    "otel": ROOT / "gateway" / "tracing" / "otel.py",
    "policy": ROOT / "gateway" / "policy" / "engine.py",  # imports the CEL library only when --policy is set
}


def extra_dists(extra: str) -> set[str]:
    return {normalize(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"][extra]}


def extra_closure(extra: str) -> set[str]:
    """An extra's packages and what they require (installed here: the tests install every extra)."""
    todo = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = normalize(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo.extend(Requirement(line) for line in metadata.requires(req.name) or [] if "extra ==" not in line)
    return seen


def third_party_imports(skip: frozenset[Path] = frozenset(OPTIONAL_MODULES.values())) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        if path in skip:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("gateway", "__future__")}


def test_every_gateway_import_is_a_base_dependency() -> None:
    providers = metadata.packages_distributions()
    closure = base_closure()
    missing = {
        module: providers.get(module)
        for module in third_party_imports()
        if not any(normalize(d) in closure for d in providers.get(module, []))
    }
    assert not missing, f"gateway/ imports modules that `pip install .` does not bring: {missing}"


def test_optional_modules_import_only_their_extra() -> None:
    providers = metadata.packages_distributions()
    everything = third_party_imports(skip=frozenset()) - third_party_imports()
    owned: set[str] = set()
    for extra, path in OPTIONAL_MODULES.items():
        allowed = base_closure() | extra_closure(extra)
        own = {n for n in _imports_of(path) if n not in sys.stdlib_module_names and n not in ("gateway", "__future__")}
        owned |= own
        missing = {m for m in own if not any(normalize(d) in allowed for d in providers.get(m, []))}
        assert not missing, f"{path.name} imports modules outside base + [{extra}]: {missing}"
    assert everything <= owned


def _imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_test_tools_are_not_base_dependencies() -> None:
    base = {normalize(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    test_only = {normalize(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert not base & test_only
    assert not {"mcp", "pytest", "hypothesis", "httpx", "mypy", "ruff"} & base


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"test-only package {name} imported by the runtime")
sys.meta_path.insert(0, Block())
import pkgutil, importlib, gateway
for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
    # gateway.__main__ runs the CLI (below); gateway.tracing.otel is imported only when tracing is on
    if info.name not in ("gateway.__main__", "gateway.tracing.otel"):
        importlib.import_module(info.name)
from gateway.config import Settings
from gateway.http.app import create_app
create_app(Settings(upstream=["default=http://127.0.0.1:9/mcp"]))
from gateway.tracing.setup import plan
tracer = plan({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}).build("r")
assert not tracer.enabled  # the extra is blocked: untraced, with a warning
sys.argv = ["mcp-gateway", "--help"]
from gateway.cli import main
main()
"""


def test_the_gateway_runs_without_any_test_package() -> None:
    top_levels: set[str] = set()
    providers = metadata.packages_distributions()
    # the test tools, and the otel extra (optional at run time); `opentelemetry-api` is also mcp's
    test_dists = extra_dists("test") | (extra_closure("otel") - base_closure()) | extra_dists("policy")
    for module, dists in providers.items():
        if any(normalize(d) in test_dists for d in dists):
            top_levels.add(module)
    assert {"mcp", "pytest", "httpx", "opentelemetry"} <= top_levels
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(top_levels))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--health-probe" in done.stdout and "--redis-url" in done.stdout
    assert "OpenTelemetry is not installed (pip install 'mcp-session-gateway[otel]')" in done.stderr


def test_the_quick_start_installs_the_runtime_only() -> None:
    demo = (ROOT / "scripts" / "demo").read_text()
    assert "bash scripts/setup --runtime" in demo and "bash scripts/setup\n" not in demo
    setup = (ROOT / "scripts" / "setup").read_text()
    runtime_end = setup.index('say "ok (runtime)')
    code = [line for line in setup[:runtime_end].splitlines() if not line.lstrip().startswith("#")]
    for test_tool in ("haproxy", "docker-compose", "kubectl", "scripts/interop", "redis-cli"):
        assert not [line for line in code if test_tool in line], f"the runtime setup installs {test_tool}"
    test = (ROOT / "scripts" / "test").read_text()
    assert "bash scripts/setup\n" in test  # the test command keeps installing everything


def test_the_version_is_written_once_and_the_image_tag_follows_it() -> None:
    import yaml

    import gateway

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"] and "version" not in project
    kustomization = yaml.safe_load((root / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text())
    assert [image["newTag"] for image in kustomization["images"]] == [gateway.__version__]
