"""Pure rules of the stateless era (2026-07-28): routing headers checked against the body."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.eras.stateless import check_routing_headers


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"mcp-method": "tools/call", "mcp-name": "echo"}, True),
        ({"mcp-method": " tools/call\t", "mcp-name": "  echo  "}, True),  # RFC 9110 §5.5 OWS
        ({"mcp-method": "TOOLS/CALL", "mcp-name": "echo"}, False),  # values are case-sensitive
        ({"mcp-method": "tools/call"}, False),  # Mcp-Name missing while the body names a tool
        ({"mcp-name": "echo"}, False),
        ({"mcp-method": "tools/call", "mcp-name": "e cho"}, False),
    ],
)
def test_check_routing_headers(headers: dict[str, str], ok: bool) -> None:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    if ok:
        check_routing_headers(headers, message)
    else:
        with pytest.raises(errors.HeaderMismatch):
            check_routing_headers(headers, message)
