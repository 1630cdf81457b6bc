"""Pure rules of the response cache (gateway/wire/caching.py): what is cacheable, the key, the hint."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.wire import caching

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "a", "version": "1"},
}


def answer(result: dict[str, Any], rid: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


@pytest.mark.parametrize("method", sorted(caching.CACHEABLE_METHODS - {"resources/read"}))
def test_every_cacheable_list_has_a_family(method: str) -> None:
    q = caching.question(method, {"_meta": META})
    assert q is not None and q.method == method and q.family == caching.FAMILY_OF[method]


@pytest.mark.parametrize("method", ["tools/call", "prompts/get", "completion/complete", "ping", None])
def test_other_methods_are_never_cached(method: str | None) -> None:
    assert caching.question(method, {"name": "x"}) is None


def test_mrtr_retries_are_never_cached() -> None:
    for field in caching.MRTR_PARAMS:
        assert caching.question("resources/read", {"uri": "file:///a", field: {}}) is None


def test_reads_of_one_uri_share_a_family_of_their_own() -> None:
    a = caching.question("resources/read", {"uri": "file:///a"})
    a2 = caching.question("resources/read", {"uri": "file:///a", "_meta": META})
    b = caching.question("resources/read", {"uri": "file:///b"})
    assert a and a2 and b
    assert a.family == a2.family == caching.family_of_read("file:///a") != b.family
    assert caching.question("resources/read", {}) is None  # no uri: nothing to key


def test_the_key_holds_the_params_that_change_the_answer() -> None:
    def digest(params: dict[str, Any]) -> str:
        q = caching.question("tools/list", params)
        assert q is not None
        return q.digest

    base = digest({"_meta": META})
    # caller descriptions and trace context are not part of the question
    info = {**META, "io.modelcontextprotocol/clientInfo": {"name": "b", "version": "2"}}
    assert digest({"_meta": {**info, "progressToken": 7, "traceparent": "00-ab-cd-01"}}) == base
    assert digest({"_meta": dict(reversed(list(META.items())))}) == base  # key order does not matter
    # a cursor, another protocol version, other client capabilities, an unknown _meta key: other answers
    assert digest({"_meta": META, "cursor": "p2"}) != base
    assert digest({"_meta": {**META, "io.modelcontextprotocol/protocolVersion": "2026-12-01"}}) != base
    assert digest({"_meta": {**META, "io.modelcontextprotocol/clientCapabilities": {"x": {}}}}) != base
    assert digest({"_meta": {**META, "vendor/tenant": "t1"}}) != base


def test_hint_needs_a_complete_success_with_a_positive_ttl() -> None:
    public = caching.hint_of(answer({"tools": [], "ttlMs": 500, "cacheScope": "public"}), 1)
    assert public == caching.Hint(500, "public")
    assert caching.hint_of(answer({"ttlMs": 500, "resultType": "complete", "cacheScope": "private"}), 1) == (
        caching.Hint(500, "private")
    )
    for bad in (0, -5, None, "500", True, 1.5):
        assert caching.hint_of(answer({"ttlMs": bad, "cacheScope": "public"}), 1) is None
    assert caching.hint_of(answer({"ttlMs": 500, "resultType": "input_required"}), 1) is None
    assert caching.hint_of({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}}, 1) is None
    assert caching.hint_of(answer({"ttlMs": 500}, rid=2), 1) is None  # another request's answer


def test_an_unknown_or_missing_scope_is_private_and_long_ttls_are_clamped() -> None:
    assert caching.hint_of(answer({"ttlMs": 10}), 1) == caching.Hint(10, "private")
    assert caching.hint_of(answer({"ttlMs": 10, "cacheScope": "shared"}), 1) == caching.Hint(10, "private")
    long = caching.hint_of(answer({"ttlMs": 10**12, "cacheScope": "public"}), 1)
    assert long == caching.Hint(caching.MAX_TTL_MS, "public")


def test_served_result_carries_the_remaining_ttl() -> None:
    result = {"tools": [{"name": "a"}], "ttlMs": 60000, "cacheScope": "public"}
    assert caching.served(result, 1234) == {**result, "ttlMs": 1234}
    assert result["ttlMs"] == 60000  # the stored copy is not changed


def test_notifications_name_the_families_they_invalidate() -> None:
    def note(method: str, **params: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": method, "params": params}

    assert caching.invalidated(note("notifications/tools/list_changed")) == ("tools",)
    assert caching.invalidated(note("notifications/prompts/list_changed")) == ("prompts",)
    assert caching.invalidated(note("notifications/resources/list_changed")) == ("resources",)
    updated = caching.invalidated(note("notifications/resources/updated", uri="file:///a"))
    assert updated == (caching.family_of_read("file:///a"),)
    assert caching.invalidated(note("notifications/resources/updated")) == ()
    assert caching.invalidated(note("notifications/progress", progress=1)) == ()
    assert caching.invalidated({"jsonrpc": "2.0", "id": 1, "method": "notifications/tools/list_changed"}) == ()


def test_partition_is_the_principal_or_the_credentials_or_nobody() -> None:
    alice = caching.partition_of("iss|alice", {})
    assert alice is not None and alice == caching.partition_of("iss|alice", {"authorization": "Bearer x"})
    assert alice != caching.partition_of("iss|bob", {})
    token_a = caching.partition_of("", {"authorization": "Bearer a"})
    assert token_a is not None and token_a != caching.partition_of("", {"authorization": "Bearer b"})
    assert token_a != caching.partition_of("", {"authorization": "Bearer a", "cookie": "s=1"})
    assert caching.partition_of("", {}) is None
    assert caching.partition_of("", {"authorization": ""}) is None


def test_cache_control_request_directives() -> None:
    assert caching.directives(None) == caching.Directives(use_stored=True, may_store=True)
    assert caching.directives("no-cache") == caching.Directives(use_stored=False, may_store=True)
    assert caching.directives("max-age = 0") == caching.Directives(use_stored=False, may_store=True)
    assert caching.directives("No-Store") == caching.Directives(use_stored=True, may_store=False)
    assert caching.directives("no-cache, no-store") == caching.Directives(use_stored=False, may_store=False)
    assert caching.directives("max-age=60, private") == caching.Directives()  # others are ignored
