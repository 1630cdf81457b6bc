"""`--task-tools POOL=NAME[:required][,...]`: parsing, globs, the first match decides, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import load_settings
from gateway.config import Settings
from gateway.config.specs import load_config_file
from gateway.errors import ConfigError
from gateway.tasks.config import TaskSupport, parse_task_tools

POOLS = ("default", "ci")


def test_names_globs_and_required() -> None:
    tools = parse_task_tools(["default=slow_*,deploy:required", "ci=build"], POOLS)
    assert tools.support("default", "slow_compute") is TaskSupport.OPTIONAL
    assert tools.support("default", "deploy") is TaskSupport.REQUIRED
    assert tools.support("default", "greet") is None
    assert tools.support("ci", "build") is TaskSupport.OPTIONAL
    assert tools.support("ci", "slow_compute") is None
    assert tools.serves("default") and tools.serves("ci")


def test_first_matching_pattern_decides_and_globs_are_case_sensitive() -> None:
    tools = parse_task_tools(["default=deploy:required,*"], POOLS)
    assert tools.support("default", "deploy") is TaskSupport.REQUIRED
    assert tools.support("default", "anything") is TaskSupport.OPTIONAL
    assert parse_task_tools(["default=Slow*"], POOLS).support("default", "slow") is None


def test_semicolon_separates_pools_and_values_repeat() -> None:
    tools = parse_task_tools(["default=a; ci=b", "default=c:required"], POOLS)
    assert tools.support("default", "a") is TaskSupport.OPTIONAL
    assert tools.support("default", "c") is TaskSupport.REQUIRED
    assert tools.support("ci", "b") is TaskSupport.OPTIONAL


def test_no_setting_serves_no_pool() -> None:
    tools = parse_task_tools([], POOLS)
    assert not tools.serves("default")
    assert tools.support("default", "x") is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nowhere=x", "not an upstream pool"),
        ("default", "expected `POOL=NAME"),
        ("=x", "expected `POOL=NAME"),
        ("default=", "lists no tool"),
        ("default=x:sometimes", "unknown modifier"),
        ("default=:required", "empty tool name"),
    ],
)
def test_bad_specs_fail_at_start_up(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_task_tools([spec], POOLS)


def test_env_and_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_TASK_TOOLS", "default=slow_*")
    assert Settings().task_tools == ["default=slow_*"]
    path = tmp_path / "gw.yaml"
    path.write_text("task_tools:\n  default: [slow_compute, 'deploy:required']\n")
    values = load_config_file(str(path))
    tools = parse_task_tools(values["task_tools"], POOLS)
    assert tools.support("default", "deploy") is TaskSupport.REQUIRED
    path.write_text("task_tools:\n  default: slow_compute\n")
    with pytest.raises(ConfigError, match="must be a list"):
        load_config_file(str(path))


def test_sync_input_tools_ask_before_they_become_tasks() -> None:
    tools = parse_task_tools(["default=deploy*,build"], POOLS, ["default=deploy_*"])
    assert tools.asks_first("default", "deploy_prod") and not tools.asks_first("default", "build")
    assert not tools.asks_first("ci", "deploy_prod")
    with pytest.raises(ConfigError, match="not a pool with task tools"):
        parse_task_tools(["default=x"], POOLS, ["ci=x"])


def test_the_flags_repeat_on_the_command_line() -> None:
    argv = [
        "--upstream",
        "default=http://127.0.0.1:1/mcp",
        "--task-tools",
        "default=a",
        "--task-tools",
        "default=b:required",
    ]
    settings = load_settings([*argv, "--task-sync-input", "default=a", "--task-sync-input", "default=b"])
    assert settings.task_tools == ["default=a", "default=b:required"]
    assert settings.task_sync_input == ["default=a", "default=b"]
    tools = parse_task_tools(settings.task_tools, POOLS, settings.task_sync_input)
    assert tools.support("default", "b") is TaskSupport.REQUIRED and tools.asks_first("default", "b")
