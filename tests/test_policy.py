"""Policy rules, their compilation (CEL) and the decision they make: pure, no sockets."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.policy import lists, rules
from gateway.policy.engine import ERROR_KEY, CompiledPolicy
from gateway.policy.variables import as_call, request_headers, variables

ISSUE_POLICY = """
deny:
  - 'mcp.tool.name == "delete_all" && !("admin" in jwt.roles)'
allow:
  - 'mcp.method in ["initialize", "ping", "tools/list", "prompts/list", "resources/list"]'
  - 'jwt.sub == "alice"'
  - 'mcp.tool.name.startsWith("read_") && pool == "files"'
limits:
  - when: 'mcp.method == "tools/call" && mcp.tool.name == "search"'
    key: 'jwt.sub'
    rate: 10/s
    burst: 20
"""


def compiled(text: str) -> CompiledPolicy:
    return CompiledPolicy(rules.parse(text))


def ctx(
    method: str = "tools/call", params: dict[str, Any] | None = None, claims: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    return variables(
        claims=claims if claims is not None else {"sub": "bob", "roles": []},
        client_ip=kw.get("ip", "127.0.0.1"),
        pool=kw.get("pool", "default"),
        method=method,
        params=params,
        headers=request_headers(kw.get("headers", [("User-Agent", "t"), ("Authorization", "Bearer x")])),
    )


def test_issue_example_decides_as_the_issue_says() -> None:
    policy = compiled(ISSUE_POLICY)
    bob, alice = {"sub": "bob", "roles": []}, {"sub": "alice", "roles": []}
    admin = {"sub": "alice", "roles": ["admin"]}
    delete = {"name": "delete_all", "arguments": {}}
    assert policy.decide(ctx("tools/list", claims=bob)).result == "allow"
    assert policy.decide(ctx("tools/call", {"name": "echo"}, bob)).result == "deny"
    assert policy.decide(ctx("tools/call", {"name": "echo"}, bob)).rule == "default"
    assert policy.decide(ctx("tools/call", {"name": "echo"}, alice)).rule == 'jwt.sub == "alice"'
    denied = policy.decide(ctx("tools/call", delete, alice))
    assert (denied.result, denied.rule) == ("deny", 'mcp.tool.name == "delete_all" && !("admin" in jwt.roles)')
    assert policy.decide(ctx("tools/call", delete, admin)).result == "allow"
    assert policy.decide(ctx("tools/call", {"name": "read_x"}, bob, pool="files")).result == "allow"
    assert policy.decide(ctx("tools/call", {"name": "read_x"}, bob, pool="default")).result == "deny"
    search = policy.decide(ctx("tools/call", {"name": "search"}, alice))
    assert [(limit.burst, limit.per_second, key) for limit, key in search.limits] == [(20, 10.0, "alice")]
    assert policy.decide(ctx("tools/call", {"name": "echo"}, alice)).limits == ()


def test_every_variable_is_defined_whatever_the_request_carries() -> None:
    policy = compiled(
        """
allow:
  - 'mcp.tool.name == "" && mcp.prompt.name == "" && mcp.resource.uri == "" && mcp.arguments.size() == 0
     && size(jwt) == 0 && client.ip == "127.0.0.1" && request.headers["user-agent"] == "t"'
"""
    )
    assert policy.decide(ctx("ping", None, claims={})).result == "allow"
    found = ctx("resources/read", {"uri": "file:///a"})
    assert found["mcp.resource.uri"] == "file:///a"
    assert "authorization" not in found["request.headers"]  # credentials never reach a rule


def test_empty_policy_allows_everything() -> None:
    decision = compiled("").decide(ctx())
    assert (decision.result, decision.rule) == ("allow", "default")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("deny: ['mcp.tool.name ==']", "does not compile"),
        ("allow: ['nosuchvar == 1']", "undeclared reference"),
        ("allow: ['pool + 1']", "does not compile"),
        ("allow: ['\"a string\"']", "not a boolean"),
        ("allow: 'x'", "must be a list"),
        ("deny: [1]", "must be a list"),
        ("other: []", "unknown section"),
        ("limits: [{key: 'jwt.sub', rate: '10/day'}]", "rate"),
        ("limits: [{key: 'jwt.sub', rate: '10/s', burst: 0}]", "burst"),
        ("limits: [{rate: '10/s'}]", "expected keys"),
        ("deny: [", "not valid YAML"),
    ],
)
def test_bad_policies_are_refused_naming_the_problem(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        compiled(text)


def test_rates_in_every_unit() -> None:
    assert rules.parse_rate("10/s") == 10
    assert rules.parse_rate("120/min") == 2
    assert rules.parse_rate("3600/h") == 1


def test_a_rule_failing_at_run_time_is_closed_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    policy = compiled(
        """
deny:
  - 'jwt.tenant == "blocked"'
allow:
  - 'jwt.team == "red"'
  - 'jwt.sub == "carol"'
limits:
  - when: 'jwt.plan == "free"'
    key: 'jwt.org'
    rate: 1/s
"""
    )
    with caplog.at_level(logging.WARNING, logger="gateway.policy"):
        # `jwt.tenant` is absent: the deny rule fails, so it refuses (never an open door)
        for _ in range(3):
            decision = policy.decide(ctx(claims={"sub": "carol"}))
            assert (decision.result, decision.rule) == ("deny", 'jwt.tenant == "blocked"')
    assert len([r for r in caplog.records if "jwt.tenant" in r.getMessage()]) == 1
    # the failing allow rule does not allow; the next one does; the failing quota applies, keyed apart
    decision = policy.decide(ctx(claims={"sub": "carol", "tenant": "ok"}))
    assert (decision.result, decision.rule) == ("allow", 'jwt.sub == "carol"')
    assert [key for _, key in decision.limits] == [ERROR_KEY]
    assert policy.decide(ctx(claims={"sub": "dave", "tenant": "ok"})).result == "deny"


def test_lists_show_only_what_may_be_called() -> None:
    policy = compiled(ISSUE_POLICY)
    result = {"tools": [{"name": "read_a"}, {"name": "write_b"}, {"name": "delete_all"}], "nextCursor": "c2"}
    base = ctx("tools/list", claims={"sub": "bob", "roles": []}, pool="files")
    assert lists.filter_result(policy, base, "tools/list", result) == {
        "tools": [{"name": "read_a"}],
        "nextCursor": "c2",
    }
    alice = ctx("tools/list", claims={"sub": "alice", "roles": []})
    shown = lists.filter_result(policy, alice, "tools/list", result)["tools"]
    assert [t["name"] for t in shown] == ["read_a", "write_b"]  # delete_all needs the admin role
    assert lists.filter_result(policy, base, "ping", {"tools": []}) == {"tools": []}
    assert as_call(base, "resources/read", "file:///x")["mcp.resource.uri"] == "file:///x"
    payload = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_a"},{"name":"x"}]}}'
    assert b'"x"' not in lists.filter_payload(policy, base, "tools/list", payload)
    assert lists.filter_payload(policy, base, "tools/list", b"not json") == b"not json"


def test_the_combined_programs_decide_as_the_rules_one_by_one() -> None:
    """The fast path (all rules in a few CEL programs) against the rules evaluated one by one, over
    requests that make rules true, false and fail (claims missing)."""
    allow = [f'jwt.sub == "u{i}"' for i in range(20)] + ['jwt.team == "red"']
    text = json.dumps({"deny": ['mcp.tool.name == "x"', 'jwt.tenant == "bad"'], "allow": allow})
    fast = compiled(text)
    slow = compiled(text)
    slow._whole = None
    assert fast._whole is not None and len(fast._whole) == 3  # 21 allow rules, 8 a program
    claims: list[dict[str, Any]] = [
        {"sub": "u0", "tenant": "ok"},
        {"sub": "u13", "tenant": "ok"},
        {"sub": "u19", "tenant": "ok", "team": "red"},
        {"sub": "zz", "tenant": "ok", "team": "red"},
        {"sub": "zz", "tenant": "ok"},  # team missing: the last allow rule fails
        {"sub": "u3"},  # tenant missing: a deny rule fails
        {"sub": "u3", "tenant": "bad"},
    ]
    for found in claims:
        for tool in ("x", "y"):
            request = ctx("tools/call", {"name": tool}, found)
            assert fast.decide(request) == slow.decide(request), (found, tool)


def test_decisions_are_kept_only_for_policies_that_read_no_arguments_or_headers() -> None:
    policy = compiled(ISSUE_POLICY)
    assert policy.memoizable
    alice = ctx("tools/call", {"name": "echo"}, {"sub": "alice", "roles": []})
    first = policy.decide_as(("token-a", "tools/call", "echo"), alice)
    assert first.result == "allow" and policy.decide_as(("token-a", "tools/call", "echo"), {}) is first  # kept
    assert not compiled("deny: ['mcp.arguments.size() > 3']").memoizable
    assert not compiled('deny: [\'request.headers["x"] == "y"\']').memoizable
