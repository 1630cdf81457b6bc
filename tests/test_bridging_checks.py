"""What the bridge refuses itself, as the 2026-07-28 server its clients see (pure)."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.bridging.onto_2025.checks import MalformedMeta, MethodNotServed, check_request, method_not_found

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {"mcp-protocol-version": "2026-07-28"}


def test_a_well_formed_request_passes() -> None:
    check_request("tools/list", {"_meta": META}, HEADERS)


@pytest.mark.parametrize("method", ["initialize", "ping", "logging/setLevel", "resources/subscribe"])
def test_removed_methods_are_404(method: str) -> None:
    with pytest.raises(MethodNotServed) as caught:
        check_request(method, {"_meta": META}, HEADERS)
    assert caught.value.status == 404 and caught.value.code == -32601


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"io.modelcontextprotocol/protocolVersion": "2026-07-28"},
        {"io.modelcontextprotocol/clientCapabilities": {}},
    ],
)
def test_missing_meta_fields_are_400_invalid_params(meta: dict[str, object]) -> None:
    with pytest.raises(MalformedMeta) as caught:
        check_request("tools/list", {"_meta": meta}, HEADERS)
    assert caught.value.status == 400 and caught.value.code == -32602


def test_the_version_header_must_match_the_meta() -> None:
    for headers in ({}, {"mcp-protocol-version": "2025-11-25"}):
        with pytest.raises(errors.HeaderMismatch):
            check_request("tools/list", {"_meta": META}, headers)


def test_method_not_found_answers() -> None:
    assert method_not_found({"error": {"code": -32601, "message": "x"}})
    assert not method_not_found({"error": {"code": -32602, "message": "x"}})
    assert not method_not_found({"result": {}})
