"""Settings and upstream pool specs."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.config.specs import DEFAULT_POOL, ProbeSpec, parse_probe, parse_upstream, parse_upstreams, resolve_probes
from gateway.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MCPGW_"):
            monkeypatch.delenv(name)


# --- parse_upstream ----------------------------------------------------------------------------


def test_named_pool_with_several_instances() -> None:
    pool = parse_upstream("search=http://a:8000/mcp, https://b.example/mcp/")
    assert pool.name == "search"
    assert pool.instances == ("http://a:8000/mcp", "https://b.example/mcp")


def test_bare_url_is_default_pool() -> None:
    pool = parse_upstream("http://127.0.0.1:9000/mcp")
    assert pool.name == DEFAULT_POOL == "default"
    assert pool.instances == ("http://127.0.0.1:9000/mcp",)


def test_bare_url_with_equals_in_query_is_default_pool() -> None:
    pool = parse_upstream("http://h/mcp?token=abc,http://i/mcp")
    assert pool.name == DEFAULT_POOL
    assert pool.instances == ("http://h/mcp?token=abc", "http://i/mcp")


def test_names_with_dash_and_underscore() -> None:
    assert parse_upstream("my-pool_2=http://x").name == "my-pool_2"
    assert parse_upstream("  spaced  =http://x").name == "spaced"


def test_pool_policy_suffix() -> None:
    assert parse_upstream("a@expire=http://x").on_instance_loss == "expire"
    assert parse_upstream("a=http://x").on_instance_loss == "reinit"
    with pytest.raises(ConfigError):
        parse_upstream("a@sometimes=http://x")


@pytest.mark.parametrize(
    "spec",
    [
        "",  # empty
        "   ",
        "name=",  # no URL
        "name= , ,",
        "=http://x",  # empty name
        "bad name=http://x",
        "bad/name=http://x",
        "bad.name=http://x",
        "ftp://files.example/mcp",  # not http(s)
        "a=ftp://files.example/mcp",
        "a=http://",  # no host
        "a=localhost:8000",  # no scheme
        "a=http://ok,notaurl",
    ],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_upstream(spec)


def test_parse_upstreams_semicolons_and_order() -> None:
    pools = parse_upstreams(["b=http://b1,http://b2; a=http://a1", "c=https://c1"])
    assert [p.name for p in pools] == ["b", "a", "c"]
    assert pools[0].instances == ("http://b1", "http://b2")
    assert parse_upstreams([]) == ()
    assert parse_upstreams([";;"]) == ()


@pytest.mark.parametrize(
    "specs",
    [["a=http://x;a=http://y"], ["a=http://x", "a=http://y"], ["http://x", "http://y"], ["default=http://x;http://y"]],
)
def test_parse_upstreams_duplicates(specs: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse_upstreams(specs)


# --- Settings -----------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings()
    assert settings.upstream == []
    assert settings.pools() == ()
    assert settings.origin_list() == ()
    assert settings.key_prefix == "mcpgw"
    assert settings.redis_url is None
    assert settings.port == 8080


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_UPSTREAM", "a=http://a1,http://a2;b=http://b1")
    monkeypatch.setenv("MCPGW_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("MCPGW_REDIS_URL", "redis://r:6379/2")
    monkeypatch.setenv("MCPGW_SESSION_TTL", "12.5")
    monkeypatch.setenv("MCPGW_PORT", "9999")
    monkeypatch.setenv("MCPGW_KEY_PREFIX", "tenant")
    settings = Settings()
    pools = settings.pools()
    assert [(p.name, p.instances) for p in pools] == [("a", ("http://a1", "http://a2")), ("b", ("http://b1",))]
    assert settings.origin_list() == ("https://a.example", "https://b.example")
    assert settings.redis_url == "redis://r:6379/2"
    assert settings.session_ttl == 12.5
    assert settings.port == 9999
    assert settings.key_prefix == "tenant"


def test_origin_list_from_repeated_values() -> None:
    settings = Settings(allowed_origins=["a", "b,c", " ", ""])
    assert settings.origin_list() == ("a", "b", "c")
    assert Settings(allowed_origins="a,b").origin_list() == ("a", "b")


def test_upstream_list_from_kwargs() -> None:
    settings = Settings(upstream=["x=http://x", "y=http://y"])
    assert [p.name for p in settings.pools()] == ["x", "y"]


def test_pools_error_surfaces_as_config_error() -> None:
    with pytest.raises(ConfigError):
        Settings(upstream=["a=http://x", "a=http://y"]).pools()


def test_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    assert settings.port == 8080


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", -1),
        ("port", 70000),
        ("workers", 0),
        ("session_ttl", 0),
        ("session_ttl", -3),
        ("stream_maxlen", 5),
        ("lease_ttl", 0),
        ("key_prefix", ""),
        ("max_body_bytes", 10),
        ("retry_ms", -1),
        ("port", "eighty"),
        ("no_such_setting", 1),  # extra fields are forbidden
    ],
)
def test_bad_values_rejected(field: str, value: object) -> None:
    bad: dict[str, Any] = {field: value}  # a value of the wrong type on purpose
    with pytest.raises(ValidationError):
        Settings(**bad)


@pytest.mark.parametrize(("var", "value"), [("MCPGW_PORT", "abc"), ("MCPGW_SESSION_TTL", "0"), ("MCPGW_WORKERS", "-2")])
def test_bad_env_values_rejected(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError):
        Settings()


# --- store topology ----------------------------------------------------------------------------


def test_store_defaults_to_one_node() -> None:
    settings = Settings()
    assert (settings.redis_cluster, settings.sentinels(), settings.redis_sentinel_master) == (False, (), "mymaster")
    assert settings.embedded_store


def test_sentinels_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_REDIS_SENTINEL", "s1:26379, s2:26380,[::1]:26381")
    monkeypatch.setenv("MCPGW_REDIS_SENTINEL_MASTER", "gw")
    monkeypatch.setenv("MCPGW_REDIS_URL", "rediss://:secret@ignored/2")
    settings = Settings()
    assert settings.sentinels() == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert settings.redis_sentinel_master == "gw" and not settings.embedded_store


def test_sentinels_without_url_are_not_embedded() -> None:
    assert not Settings(redis_sentinel=["s1:26379"]).embedded_store


def test_empty_sentinel_env_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_REDIS_SENTINEL", "")
    assert Settings().sentinels() == () and Settings().embedded_store


def test_cluster_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_REDIS_CLUSTER", "true")
    monkeypatch.setenv("MCPGW_REDIS_URL", "rediss://user:pw@clustercfg.example:6379")
    assert Settings().redis_cluster


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"redis_cluster": True, "redis_url": "redis://a:1", "redis_sentinel": ["s:1"]}, "exclude each other"),
        ({"redis_cluster": True}, "needs --redis-url"),
        ({"redis_cluster": True, "redis_url": "redis://a:1/3"}, "only database 0"),
        ({"redis_sentinel": ["sentinel-1"]}, "expected HOST:PORT"),
        ({"redis_sentinel": ["s:notaport"]}, "expected HOST:PORT"),
        ({"redis_sentinel": [":26379"]}, "expected HOST:PORT"),
        ({"redis_sentinel": ["s:70000"]}, "expected HOST:PORT"),
        ({"redis_url": "http://a:1"}, "redis:// or rediss://"),
        ({"redis_url": "unix:///tmp/r.sock", "redis_sentinel": ["s:1"]}, "redis:// or rediss://"),
    ],
)
def test_bad_store_topology_is_a_clear_config_error(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings(**values)  # type: ignore[arg-type]


# --- health probes -----------------------------------------------------------------------------

BASE = ProbeSpec("tcp", 2.0)


@pytest.mark.parametrize(
    ("spec", "pool", "expected"),
    [
        ("tcp", None, ProbeSpec("tcp", 2.0)),
        ("DISCOVER@10", None, ProbeSpec("discover", 10.0)),
        ("search=ping", "search", ProbeSpec("ping", 2.0)),
        ("search=GET /healthz@0.5", "search", ProbeSpec("http", 0.5, "GET", "/healthz")),
        ("my-pool_2=/healthz", "my-pool_2", ProbeSpec("http", 2.0, "GET", "/healthz")),
        ("head /ready?deep=1", None, ProbeSpec("http", 2.0, "HEAD", "/ready?deep=1")),
        ("search=@7", "search", ProbeSpec("tcp", 7.0)),
    ],
)
def test_parse_probe(spec: str, pool: str | None, expected: ProbeSpec) -> None:
    assert parse_probe(spec, BASE) == (pool, expected)


@pytest.mark.parametrize("spec", ["carrier-pigeon", "DELETE /x", "GET healthz", "tcp@soon", "tcp@0", "p=tcp@-1"])
def test_bad_probes(spec: str) -> None:
    with pytest.raises(ConfigError, match="health_probe"):
        parse_probe(spec, BASE)


def test_resolve_probes_default_then_global_then_per_pool() -> None:
    pools = parse_upstreams(["a=http://a;b=http://b;c=http://c"])
    assert resolve_probes([], pools, 3.0) == dict.fromkeys("abc", ProbeSpec("tcp", 3.0))
    got = resolve_probes(["b=GET /healthz@5; options", "c=@9"], pools, 3.0)
    assert got == {
        "a": ProbeSpec("options", 3.0),
        "b": ProbeSpec("http", 5.0, "GET", "/healthz"),
        "c": ProbeSpec("options", 9.0),  # per-pool entries start from the pool-wide default
    }
    with pytest.raises(ConfigError, match="names no configured pool"):
        resolve_probes(["zz=tcp"], pools, 3.0)


def test_probes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_UPSTREAM", "a=http://a;b=http://b")
    monkeypatch.setenv("MCPGW_HEALTH_PROBE", "discover;b=tcp@1")
    monkeypatch.setenv("MCPGW_HEALTH_INTERVAL", "4")
    assert Settings().probes() == {"a": ProbeSpec("discover", 4.0), "b": ProbeSpec("tcp", 1.0)}
