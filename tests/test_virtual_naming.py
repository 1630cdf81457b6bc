"""Virtual servers' configuration and names (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import load_settings
from gateway.errors import ConfigError
from gateway.virtual.naming import (
    MAX_MEMBERS,
    VirtualServer,
    member_of_stream,
    member_stream_id,
    parse_virtual_servers,
)
from gateway.wire import cursor

POOLS = ("search", "files", "my_pool", "a", "a-b")


def test_parse_keeps_member_order_and_splits_on_semicolons() -> None:
    servers = parse_virtual_servers(["all=files,search", "one=a;two=a-b,a"], POOLS, "__")
    assert [(s.name, s.members) for s in servers] == [
        ("all", ("files", "search")),
        ("one", ("a",)),
        ("two", ("a-b", "a")),
    ]
    assert all(s.separator == "__" for s in servers)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("all", "NAME=POOL"),
        ("=search", "NAME=POOL"),
        ("all=", "member pools"),
        ("all=nowhere", "unknown pool"),
        ("search=files", "already an upstream pool"),
        ("all=files,files", "twice"),
        ("b@d=files", "NAME=POOL"),
    ],
)
def test_bad_specs_fail_at_start_up(spec: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_virtual_servers([spec], POOLS, "__")


def test_a_server_defined_twice_fails() -> None:
    with pytest.raises(ConfigError, match="defined twice"):
        parse_virtual_servers(["all=a", "all=files"], POOLS, "__")


def test_a_member_whose_name_holds_the_separator_fails() -> None:
    with pytest.raises(ConfigError, match="contains the separator"):
        parse_virtual_servers(["all=my_pool"], POOLS, "_")


def test_prefix_and_split_round_trip() -> None:
    server = VirtualServer("all", ("search", "files"), "__")
    assert server.prefixed("files", "read") == "files__read"
    assert server.split("files__read") == ("files", "read")
    assert server.split("search__a__b") == ("search", "a__b")  # the member's own name may hold it
    assert server.split("files__") is None
    assert server.split("other__read") is None
    assert server.split("read") is None


def test_a_stream_id_names_its_member() -> None:
    server = VirtualServer("all", tuple(f"p{i}" for i in range(MAX_MEMBERS)))
    for index in (0, 1, 37, MAX_MEMBERS - 1):
        stream = member_stream_id(index, cursor.new_stream_id())
        assert cursor.valid_stream_id(stream)
        assert member_of_stream(server, stream) == f"p{index}"
    small = VirtualServer("two", ("a", "b"))
    assert member_of_stream(small, member_stream_id(5, cursor.new_stream_id())) is None


def test_settings_from_flags_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flags = load_settings(["--upstream", "a=http://h/mcp", "--virtual-server", "v=a", "--virtual-servers", "w=a"])
    assert flags.virtual_servers == ["v=a", "w=a"] and flags.virtual_separator == "__"
    monkeypatch.setenv("MCPGW_VIRTUAL_SERVERS", "v=a;w=a")
    monkeypatch.setenv("MCPGW_VIRTUAL_SEPARATOR", "--")
    env = load_settings(["--upstream", "a=http://h/mcp"])
    servers = parse_virtual_servers(env.virtual_servers, ["a"], env.virtual_separator)
    assert [(s.name, s.members, s.separator) for s in servers] == [("v", ("a",), "--"), ("w", ("a",), "--")]
    monkeypatch.delenv("MCPGW_VIRTUAL_SERVERS")
    monkeypatch.delenv("MCPGW_VIRTUAL_SEPARATOR")
    config = tmp_path / "gateway.yaml"
    config.write_text("virtual_servers: ['v=a']\n")
    assert load_settings(["--upstream", "a=http://h/mcp", "--config", str(config)]).virtual_servers == ["v=a"]
