"""Merging the members' answers of a virtual server (pure)."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.virtual.merging import (
    LISTS,
    decode_cursor,
    encode_cursor,
    initialize_result,
    merge_capabilities,
    merge_page,
    template_matches,
)
from gateway.virtual.naming import VirtualServer

SERVER = VirtualServer("all", ("search", "files"), "__")


def test_tools_are_prefixed_per_member_in_member_order() -> None:
    merged = merge_page(
        SERVER,
        LISTS["tools/list"],
        {
            "files": {"tools": [{"name": "echo", "inputSchema": {}}]},
            "search": {"tools": [{"name": "echo", "description": "d"}, {"name": "query"}]},
        },
    )
    assert [t["name"] for t in merged.result["tools"]] == ["search__echo", "search__query", "files__echo"]
    assert merged.result["tools"][0]["description"] == "d"
    assert "nextCursor" not in merged.result


def test_a_uri_two_members_list_goes_to_the_first() -> None:
    merged = merge_page(
        SERVER,
        LISTS["resources/list"],
        {
            "search": {"resources": [{"uri": "x://1", "name": "s"}]},
            "files": {"resources": [{"uri": "x://1", "name": "f"}, {"uri": "x://2", "name": "f2"}]},
        },
    )
    assert [(r["uri"], r["name"]) for r in merged.result["resources"]] == [("x://1", "s"), ("x://2", "f2")]
    assert merged.conflicts == [("x://1", "search", "files")]


def test_pagination_keeps_each_members_cursor() -> None:
    first = merge_page(
        SERVER,
        LISTS["prompts/list"],
        {"search": {"prompts": [{"name": "p"}], "nextCursor": "s2"}, "files": {"prompts": [{"name": "q"}]}},
    )
    cursor = first.result["nextCursor"]
    assert decode_cursor(cursor, SERVER.members) == {"search": "s2"}  # files is done
    assert decode_cursor(None, SERVER.members) == {"search": None, "files": None}
    assert encode_cursor({}) is None


@pytest.mark.parametrize("bad", ["not base64!", encode_cursor({"nowhere": "x"}), "eyJzZWFyY2giOiAzfQ==", "W10="])
def test_a_foreign_cursor_is_invalid_params(bad: str | None) -> None:
    with pytest.raises(errors.InvalidParams):
        decode_cursor(bad, SERVER.members)


def test_capabilities_are_the_union() -> None:
    merged = merge_capabilities(
        [
            {"tools": {"listChanged": False}, "logging": {}},
            {"tools": {"listChanged": True}, "resources": {"subscribe": True}},
        ]
    )
    assert merged == {"tools": {"listChanged": True}, "logging": {}, "resources": {"subscribe": True}}


def test_initialize_result_names_the_virtual_server_and_each_members_instructions() -> None:
    result = initialize_result(
        SERVER,
        "2025-11-25",
        {"files": {"capabilities": {"prompts": {}}, "instructions": "F"}, "search": {"capabilities": {}}},
        "1.0",
    )
    assert result["serverInfo"] == {"name": "all", "version": "1.0"}
    assert result["protocolVersion"] == "2025-11-25"
    assert result["capabilities"] == {"prompts": {}, "tools": {"listChanged": True}}  # the gateway announces
    assert result["instructions"] == "## files\nF"


def test_template_matching() -> None:
    assert template_matches("notes://{id}", "notes://3")
    assert not template_matches("notes://{id}", "notes://3/4")
    assert template_matches("file:///{+path}", "file:///a/b.txt")
    assert not template_matches("notes://{id}", "other://3")


def test_a_2026_merge_is_as_fresh_as_its_stalest_member() -> None:
    pages = {
        "search": {"tools": [], "resultType": "complete", "ttlMs": 5000, "cacheScope": "public"},
        "files": {"tools": [], "resultType": "complete", "ttlMs": 2000, "cacheScope": "public"},
    }
    merged = merge_page(SERVER, LISTS["tools/list"], pages).result
    assert (merged["resultType"], merged["ttlMs"], merged["cacheScope"]) == ("complete", 2000, "public")
    pages["files"] = {"tools": [], "resultType": "complete"}
    merged = merge_page(SERVER, LISTS["tools/list"], pages).result
    assert (merged["ttlMs"], merged["cacheScope"]) == (0, "private")
    assert "ttlMs" not in merge_page(SERVER, LISTS["tools/list"], {"search": {"tools": []}}).result  # 2025 eras
