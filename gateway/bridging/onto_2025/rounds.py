"""Multi round-trip requests (SEP-2322, 2026-07-28 basic/patterns/mrtr) over a 2025 upstream call.

A 2025 upstream asks the client something (`elicitation/create`, `sampling/createMessage`,
`roots/list`) as a request on the call's SSE stream, and waits. The bridge answers the 2026
client with an InputRequiredResult and leaves the upstream call running; its `requestState`
names everything needed to go on: the held upstream session, the upstream call's id, the
pending upstream request ids and the stream's last event id. The client's retry, on any replica,
POSTs the answers upstream as JSON-RPC responses and resumes the call's stream with
`Last-Event-ID` (2025 transports §Resumability), so no replica has to keep anything.

The state is sealed (HMAC-SHA256, a key every replica shares) and bound to the principal, the
method and the request's name, with a short expiry (mrtr §Server Requirements: treat
`requestState` as attacker-controlled; bind it to the principal, the request, a TTL).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gateway import errors

STATE_TTL = 600.0  # s a retry may take (the Python SDK server's own requestState lives as long)
# mrtr §InputRequests: the server-to-client requests a result may carry.
INPUT_METHODS = frozenset({"elicitation/create", "sampling/createMessage", "roots/list"})
# The request parameter that names what is asked for (bound into the state with the method).
NAME_OF = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


@dataclass(frozen=True)
class Round:
    """What the retry needs: the upstream call and where its stream stopped."""

    principal: str
    method: str
    name: str
    pool: str
    instance: str
    digest: str  # the held upstream session's key (its id is never given to the client)
    call: str  # the call's JSON-RPC id upstream
    asked: dict[str, Any]  # input key -> the upstream request id it answers
    last_event: str
    expires: float


def name_of(method: str, params: Mapping[str, Any]) -> str:
    key = NAME_OF.get(method)
    return str(params.get(key, "")) if key is not None else ""


def input_key(upstream_request_id: Any) -> str:
    return f"u{upstream_request_id}"


def input_required(requests: Mapping[str, Mapping[str, Any]], state: str) -> dict[str, Any]:
    """mrtr §InputRequiredResult: the questions, keyed, and the sealed state."""
    asked = {key: {"method": r["method"], "params": r.get("params", {})} for key, r in requests.items()}
    return {"resultType": "input_required", "inputRequests": asked, "requestState": state}


class Sealer:
    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def expiry(self) -> float:
        return self._clock() + STATE_TTL

    def seal(self, round_: Round) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(asdict(round_), separators=(",", ":")).encode())
        return (payload + b"." + base64.urlsafe_b64encode(self._mac(payload))).decode()

    def open(self, state: object, principal: str, method: str, name: str) -> Round:
        """The round a retry continues; InvalidParams when the state is forged, stale or not this request's."""
        if not isinstance(state, str) or "." not in state:
            raise errors.InvalidParams("Invalid params: requestState is not the gateway's")
        payload, _, mac = state.encode().partition(b".")
        try:
            valid = hmac.compare_digest(base64.urlsafe_b64decode(mac), self._mac(payload))
            round_ = Round(**json.loads(base64.urlsafe_b64decode(payload))) if valid else None
        except (ValueError, TypeError):
            round_ = None
        if round_ is None:
            raise errors.InvalidParams("Invalid params: requestState failed verification")
        if round_.expires < self._clock():
            raise errors.InvalidParams("Invalid params: requestState expired")
        if (round_.principal, round_.method, round_.name) != (principal, method, name):
            raise errors.InvalidParams("Invalid params: requestState belongs to another request")
        return round_

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()
