"""The CLI contract: flags, env vars, config files, and clear errors for bad configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import REPEATABLE, build_parser, forwarded_options, load_settings
from gateway.config import Settings
from gateway.config.groups import GROUPS
from gateway.config.settings import is_list_setting
from gateway.config.specs import ProbeSpec
from gateway.errors import ConfigError


def test_flags_map_to_settings() -> None:
    settings = load_settings(
        [
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--upstream",
            "a=http://x/mcp",
            "--upstream",
            "b@expire=http://y/mcp,http://z/mcp",
            "--redis-url",
            "redis://r:1/2",
        ]
    )
    assert (settings.host, settings.port, settings.redis_url) == ("0.0.0.0", 9000, "redis://r:1/2")
    pools = settings.pools()
    assert [p.name for p in pools] == ["a", "b"]
    assert pools[1].instances == ("http://y/mcp", "http://z/mcp") and pools[1].on_instance_loss == "expire"


def test_every_setting_has_a_flag() -> None:
    help_text = build_parser().format_help()
    for flag in (
        "--upstream",
        "--redis-url",
        "--host",
        "--port",
        "--session-ttl",
        "--allowed-origins",
        "--key-prefix",
        "--stream-maxlen",
        "--drain-timeout",
        "--config",
    ):
        assert flag in help_text


def test_store_topology_flags() -> None:
    settings = load_settings(["--upstream", "http://x/mcp", "--redis-url", "redis://seed:7000", "--redis-cluster"])
    assert settings.redis_cluster  # a bare boolean flag means true
    assert not load_settings(["--upstream", "http://x/mcp", "--redis-cluster", "false"]).redis_cluster
    sentinel = load_settings(
        ["--upstream", "http://x/mcp", "--redis-sentinel", "a:26379,b:26379", "--redis-sentinel-master", "gw"]
    )
    assert sentinel.sentinels() == (("a", 26379), ("b", 26379)) and sentinel.redis_sentinel_master == "gw"


def test_store_topology_from_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("upstream: [http://x/mcp]\nredis_sentinel: [s1:26379, s2:26379]\nredis-sentinel-master: m\n")
    settings = load_settings(["--config", str(config)])
    assert settings.sentinels() == (("s1", 26379), ("s2", 26379)) and settings.redis_sentinel_master == "m"


def test_env_then_file_then_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "port: 7000\nsession_ttl: 12\nupstream:\n  main:\n    instances: [http://a/mcp, http://b/mcp]\n"
        "    on_instance_loss: expire\n"
    )
    monkeypatch.setenv("MCPGW_PORT", "7100")
    settings = load_settings(["--config", str(config)])
    assert settings.port == 7100  # env beats the file
    assert settings.session_ttl == 12  # the file beats the default
    (pool,) = settings.pools()
    assert pool.name == "main" and pool.on_instance_loss == "expire" and len(pool.instances) == 2
    assert load_settings(["--config", str(config), "--port", "7200"]).port == 7200  # flags beat env


def test_health_probes_from_flags_and_the_pool_mapping(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "health_probe: options\nupstream:\n  main:\n    instances: [http://a/mcp]\n"
        "    health_probe: GET /healthz\n    health_interval: 5\n  side:\n    instances: [http://b/mcp]\n"
    )
    probes = load_settings(["--config", str(config)]).probes()
    assert probes == {"main": ProbeSpec("http", 5.0, "GET", "/healthz"), "side": ProbeSpec("options", 2.0)}
    flags = ["--upstream", "a=http://a/mcp", "--upstream", "b=http://b/mcp"]
    probes = load_settings([*flags, "--health-probe", "ping", "--health-probe", "b=discover@1"]).probes()
    assert probes == {"a": ProbeSpec("ping", 2.0), "b": ProbeSpec("discover", 1.0)}


def test_toml_config(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('upstream = ["default=http://a/mcp"]\nkey_prefix = "gw2"\n')
    settings = load_settings(["--config", str(config)])
    assert settings.key_prefix == "gw2" and settings.pools()[0].instances == ("http://a/mcp",)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("upstream:\n  main:\n    instances: nope\n", "upstream.main.instances"),
        ("upstream:\n  main:\n    instances: [http://a/mcp]\n    colour: red\n", "colour"),
        ("portt: 1\n", "portt"),
        ("port: [unbalanced\n", "not valid YAML"),
    ],
)
def test_bad_config_file_names_the_field(tmp_path: Path, content: str, needle: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_settings(["--config", str(config)])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--upstream", "default=ftp://x/mcp"], "not an http(s) URL"),
        (["--upstream", "a=http://x/mcp", "--upstream", "a=http://y/mcp"], "defined twice"),
        (["--upstream", "a@sometimes=http://x/mcp"], "on_instance_loss"),
        (["--port", "99999", "--upstream", "http://x/mcp"], "port"),
        ([], "at least one --upstream"),
        (["--upstream", "http://x/mcp", "--redis-cluster"], "--redis-cluster needs --redis-url"),
        (
            ["--upstream", "http://x/mcp", "--redis-url", "redis://a:1", "--redis-cluster", "--redis-sentinel", "s:1"],
            "exclude each other",
        ),
        (["--upstream", "http://x/mcp", "--redis-sentinel", "s1:26379,s2"], "expected HOST:PORT"),
        # issue 35: auth without an explicit audience would take it from the request's Host
        (
            ["--upstream", "http://x/mcp", "--auth-issuer", "https://i.example", "--auth-public-key", "k"],
            "needs an explicit audience",
        ),
    ],
)
def test_bad_configuration_exits_2_with_a_clear_message(args: list[str], needle: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr


def test_an_otlp_protocol_the_gateway_cannot_export_exits_2() -> None:
    """Tracing asked for over gRPC: refused at start-up (http/protobuf only), not silently untraced."""
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--upstream", "http://x/mcp"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and "protobuf bodies only (http/protobuf" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("threshold", "expected"), [(5000, "5000 True"), (0, "700 False")])
def test_the_served_process_freezes_its_start_up_heap_and_collects_young_objects_less_often(
    threshold: int, expected: str
) -> None:
    """In a process of its own: freezing is process-wide, never done to the test runner."""
    code = (
        "import gc; from gateway.cli import tune_gc; "
        f"tune_gc({threshold}); print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split("\n")[0] == expected


def test_forwarded_headers_are_trusted_by_the_flag_alone() -> None:
    """uvicorn's proxy-headers layer is off unless `--trust-forwarded-for` (then for any peer)."""
    assert forwarded_options(load_settings([])) == {"proxy_headers": False}
    assert forwarded_options(load_settings(["--trust-forwarded-for"])) == {
        "proxy_headers": True,
        "forwarded_allow_ips": "*",
    }


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("name", sorted(n for n in Settings.model_fields if is_list_setting(Settings, n)))
def test_every_list_setting_keeps_every_occurrence_of_its_flag(name: str) -> None:
    # cli.REPEATABLE once named 5 of 9 list settings: the others kept only their last flag, silently
    args = build_parser().parse_args([_flag(name), "first", _flag(name), "second"])
    assert getattr(args, name) == ["first", "second"]
    assert name in REPEATABLE


def test_every_setting_sits_in_exactly_one_help_group() -> None:
    placed = [name for names in GROUPS.values() for name in names]
    assert sorted(placed) == sorted(Settings.model_fields), "place new settings in gateway/config/groups.py"
    assert len(placed) == len(set(placed))


def test_help_is_grouped_and_internals_are_advanced() -> None:
    text = build_parser().format_help()
    for title in GROUPS:
        assert f"\n{title}:\n" in text
    advanced = text[text.index("\nadvanced:\n") :]
    assert "--gc-young-threshold" in advanced and "--upstream " not in advanced


def test_version_is_written_once_and_printed() -> None:
    import gateway

    done = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == f"mcp-gateway {gateway.__version__}"
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and gateway.__version__ not in pyproject
