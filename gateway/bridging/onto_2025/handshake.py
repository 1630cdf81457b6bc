"""The 2025 session lifecycle the bridge runs against an upstream instance: open (initialize,
then notifications/initialized) and close (DELETE)."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.bridging.onto_2025 import translate
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.wire.protocol import H_SESSION, H_VERSION, JSON, SSE

LATEST_2025 = "2025-11-25"  # offered at initialize; the upstream may answer an older one


@dataclass(frozen=True)
class Opened:
    """An upstream session: its id ("" when the upstream issued none), version and InitializeResult."""

    sid: str
    version: str
    result: Mapping[str, Any]


class Handshake:
    def __init__(self, upstream: UpstreamClient, headers: HeaderPolicy, *, max_body: int) -> None:
        self._upstream = upstream
        self._headers = headers
        self._max_body = max_body

    def headers(self, pool: str, sid: str = "", version: str = "") -> dict[str, str]:
        """What a bridge request upstream carries: the pool's own credentials, never the client's."""
        headers = self._headers.build((), pool)
        headers.update({"Accept": f"{JSON}, {SSE}", "Content-Type": JSON})
        if sid:
            headers[H_SESSION] = sid
        if version and version != "2025-03-26":
            headers[H_VERSION] = version  # 2025-06-18 transports §Protocol Version Header
        return headers

    async def open(self, pool: str, instance: str, capabilities: Mapping[str, Any], info: Mapping[str, Any]) -> Opened:
        request_id = f"mcpgw-init-{secrets.token_hex(4)}"
        body = translate.initialize_request(request_id, capabilities, info, LATEST_2025)
        response = await self._upstream.send("POST", instance, self.headers(pool), body)
        sid = response.headers.get(H_SESSION, "")
        status, is_sse = response.status, response.is_sse
        payload = await response.read(self._max_body)
        answer = translate.answer_in(payload, is_sse, request_id) if status == 200 else None
        result = answer.get("result") if answer is not None else None
        if not isinstance(result, dict):
            raise errors.UpstreamError(f"Bad upstream answer: initialize failed (HTTP {status})")
        version = str(result.get("protocolVersion") or LATEST_2025)
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        (await self._upstream.send("POST", instance, self.headers(pool, sid, version), note)).close()
        return Opened(sid=sid, version=version, result=result)

    async def close(self, pool: str, instance: str, sid: str, version: str) -> None:
        """2025 transports §Session Management: DELETE ends the session (failures do not matter)."""
        if not sid:
            return
        with contextlib.suppress(errors.UpstreamError):
            response = await self._upstream.send("DELETE", instance, self.headers(pool, sid, version), None)
            response.close()
