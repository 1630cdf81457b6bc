"""The sealed requestState of bridged multi round-trip requests (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway import errors
from gateway.bridging.onto_2025.rounds import STATE_TTL, Round, Sealer, input_key, input_required, name_of
from tests.clocks import Clock


def a_round(sealer: Sealer, **overrides: object) -> Round:
    fields: dict[str, object] = dict(
        principal="alice",
        method="tools/call",
        name="ask",
        pool="p",
        instance="http://u/mcp",
        digest="d" * 32,
        call="mcpgw-1",
        asked={"u0": 0},
        last_event="e1",
        expires=sealer.expiry(),
    )
    fields.update(overrides)
    return Round(**fields)  # type: ignore[arg-type]


def test_seal_and_open_roundtrip() -> None:
    sealer = Sealer(b"k")
    round_ = a_round(sealer)
    assert sealer.open(sealer.seal(round_), "alice", "tools/call", "ask") == round_
    assert Sealer(b"k").open(sealer.seal(round_), "alice", "tools/call", "ask") == round_  # any replica


@pytest.mark.parametrize(
    ("principal", "method", "name"),
    [("bob", "tools/call", "ask"), ("alice", "prompts/get", "ask"), ("alice", "tools/call", "other")],
)
def test_a_state_serves_its_own_principal_and_request_only(principal: str, method: str, name: str) -> None:
    sealer = Sealer(b"k")
    with pytest.raises(errors.InvalidParams, match="another request"):
        sealer.open(sealer.seal(a_round(sealer)), principal, method, name)


def test_forged_tampered_and_foreign_states_fail() -> None:
    sealer = Sealer(b"k")
    state = sealer.seal(a_round(sealer))
    payload, _, mac = state.partition(".")
    forged = Sealer(b"k").seal(dataclasses.replace(a_round(sealer), principal="mallory"))
    for bad in (Sealer(b"other").seal(a_round(sealer)), forged.partition(".")[0] + "." + mac, "x", 3, "a.b"):
        with pytest.raises(errors.InvalidParams):
            sealer.open(bad, "alice", "tools/call", "ask")
    assert payload  # the untouched state still opens
    sealer.open(state, "alice", "tools/call", "ask")


def test_a_state_expires() -> None:
    clock = Clock()
    sealer = Sealer(b"k", clock=clock)
    state = sealer.seal(a_round(sealer))
    clock.now += STATE_TTL + 1
    with pytest.raises(errors.InvalidParams, match="expired"):
        sealer.open(state, "alice", "tools/call", "ask")


def test_input_required_result_shape() -> None:
    request = {"jsonrpc": "2.0", "id": 3, "method": "elicitation/create", "params": {"message": "?"}}
    assert input_required({input_key(3): request}, "S") == {
        "resultType": "input_required",
        "inputRequests": {"u3": {"method": "elicitation/create", "params": {"message": "?"}}},
        "requestState": "S",
    }
    assert name_of("resources/read", {"uri": "x://1"}) == "x://1"
    assert name_of("tools/list", {}) == ""
