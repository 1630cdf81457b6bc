"""The bridged subscriptions/listen filter and tagging (pure)."""

from __future__ import annotations

import json

from gateway.bridging.onto_2025.listen import SUBSCRIPTION_ID, honoured, passes, tagged

CAPABILITIES = {"tools": {"listChanged": True}, "prompts": {}, "resources": {"subscribe": True}}


def test_only_what_the_upstream_announces_is_acknowledged() -> None:
    asked = {"toolsListChanged": True, "promptsListChanged": True, "resourceSubscriptions": ["a://1", 3]}
    wanted = honoured(asked, CAPABILITIES)
    assert wanted.acknowledged == {"toolsListChanged": True, "resourceSubscriptions": ["a://1"]}
    assert honoured(None, CAPABILITIES).acknowledged == {}
    assert honoured({"toolsListChanged": False}, CAPABILITIES).acknowledged == {}


def test_notifications_are_filtered() -> None:
    wanted = honoured({"toolsListChanged": True, "resourceSubscriptions": ["a://1"]}, CAPABILITIES)
    assert passes({"method": "notifications/tools/list_changed"}, wanted)
    assert not passes({"method": "notifications/prompts/list_changed"}, wanted)
    assert passes({"method": "notifications/resources/updated", "params": {"uri": "a://1"}}, wanted)
    assert not passes({"method": "notifications/resources/updated", "params": {"uri": "a://2"}}, wanted)
    assert not passes({"method": "notifications/message", "params": {}}, wanted)


def test_every_message_carries_the_subscription_id() -> None:
    encoded = tagged({"jsonrpc": "2.0", "method": "m", "params": {"uri": "u", "_meta": {"k": 1}}}, 7)
    data = json.loads(encoded.decode().split("data: ", 1)[1])
    assert data["params"] == {"uri": "u", "_meta": {"k": 1, SUBSCRIPTION_ID: 7}}
    assert json.loads(tagged({"method": "m"}, "s").decode().split("data: ", 1)[1])["params"] == {
        "_meta": {SUBSCRIPTION_ID: "s"}
    }
