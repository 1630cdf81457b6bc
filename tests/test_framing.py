"""gateway.http.framing: the connection rules' pure parts (answers, Host rule, budget, counts)."""

from __future__ import annotations

import json

import pytest

from gateway.http import framing
from gateway.http.framing import Admission, ConnectionRules, Verdict


def test_a_canned_answer_is_a_whole_json_rpc_error_that_closes() -> None:
    raw = framing.canned(framing.TooManyConnections("too many"), [(b"date", b"today")])
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 429 Too Many Requests"
    assert {b"date: today", b"Retry-After: 1", b"connection: close", b"content-type: application/json"} <= set(lines)
    assert f"content-length: {len(body)}".encode() in lines
    assert json.loads(body) == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "too many"}}


@pytest.mark.parametrize(
    ("headers", "version", "refused"),
    [
        ([(b"host", b"a")], "1.1", False),
        ([(b"host", b"a"), (b"host", b"a")], "1.1", True),  # even the same value twice
        ([(b"host", b"a"), (b"x", b"1"), (b"host", b"b")], "1.0", True),
        ([], "1.1", True),
        ([], "1.0", False),
    ],
)
def test_host_rule(headers: list[tuple[bytes, bytes]], version: str, refused: bool) -> None:
    refusal = framing.host_refusal(headers, version)
    assert (refusal is not None) is refused
    if refusal is not None:
        assert refusal.status == 400


def test_the_connection_budget_fits_the_descriptors() -> None:
    assert framing.connection_budget(8192, 1 << 20) == 8192
    assert framing.connection_budget(8192, 1024) == (1024 - framing.DESCRIPTOR_RESERVE - framing.HEALTH_RESERVE) // 2
    assert framing.connection_budget(0, 1024) == 0  # off stays off


def test_the_head_estimate_counts_whole_lines() -> None:
    assert framing.head_estimate(b"/mcp", [(b"host", b"x")]) == 4 + 4 + 1 + 4


def test_admission_counts_per_client_and_over_the_caps() -> None:
    admission = Admission(ConnectionRules(1024, 1, 1, max_connections=100, max_connections_per_client=2))
    assert [admission.open("a")[0] for _ in range(2)] == [Verdict.ADMIT, Verdict.ADMIT]
    verdict, refusal = admission.open("a")
    assert verdict is Verdict.HEALTH_ONLY and refusal is not None and refusal.status == 429
    for _ in range(framing.CLIENT_RESERVE - 1):
        assert admission.open("a")[0] is Verdict.HEALTH_ONLY
    assert admission.open("a")[0] is Verdict.REFUSE  # past the client's reserve
    assert admission.open("b")[0] is Verdict.ADMIT  # another address is not affected
    assert admission.total == 3 + framing.CLIENT_RESERVE + 1 and admission.refused == framing.CLIENT_RESERVE + 1
    for _ in range(3 + framing.CLIENT_RESERVE):
        admission.close("a")
    admission.close("b")
    assert admission.total == 0 and admission.by_client == {}


def test_admission_past_the_total_is_503_and_health_only() -> None:
    admission = Admission(ConnectionRules(1024, 1, 1, max_connections=1, max_connections_per_client=0))
    assert admission.open("a")[0] is Verdict.ADMIT
    verdict, refusal = admission.open("b")
    assert verdict is Verdict.HEALTH_ONLY and refusal is not None and refusal.status == 503
    assert admission.by_client == {}  # per-client counting is off


def test_behind_a_trusted_proxy_only_the_total_is_capped() -> None:
    admission = Admission(
        ConnectionRules(1024, 1, 1, max_connections=0, max_connections_per_client=1), per_client=False
    )
    assert [admission.open("proxy")[0] for _ in range(10)] == [Verdict.ADMIT] * 10
