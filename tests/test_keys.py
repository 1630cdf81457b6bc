"""Redis key layout: one hash tag (one cluster slot) per session."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.keys import Keys
from gateway.wire import protocol


def crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def hash_slot(key: str) -> int:
    """Redis Cluster key slot (cluster spec §Keys hash tags)."""
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end != -1 and end != start + 1:
            raw = raw[start + 1 : end]
    return crc16_xmodem(raw) % 16384


def test_crc16_reference_values() -> None:
    # values from the Redis Cluster specification
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert hash_slot("foo") == 12182
    assert hash_slot("{user1000}.following") == hash_slot("{user1000}.followers")
    assert hash_slot("foo{}{bar}") == crc16_xmodem(b"foo{}{bar}") % 16384


def all_keys(keys: Keys, session: str, streams: list[str]) -> list[str]:
    out = [keys.session(session), keys.streams(session), keys.reinit_lock(session)]
    for stream in streams:
        out.extend([keys.events(session, stream), keys.meta(session, stream), keys.lease(session, stream)])
        out.extend(keys.stream_keys(session, stream))
    return out


def test_session_keys_share_one_slot() -> None:
    keys = Keys("mcpgw")
    session = protocol.new_session_id()
    every = all_keys(keys, session, ["AAAAAAAAAAAA", "bbbbbbbbbbbb", "zz-__-000111"])
    assert {hash_slot(k) for k in every} == {crc16_xmodem(session.encode()) % 16384}
    assert all(f"{{{session}}}" in k for k in every)


@given(
    session=st.from_regex(r"[A-Za-z0-9_-]{32}", fullmatch=True),
    stream=st.from_regex(r"[A-Za-z0-9_-]{12}", fullmatch=True),
    prefix=st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True),
)
def test_slots_property(session: str, stream: str, prefix: str) -> None:
    keys = Keys(prefix)
    assert len({hash_slot(k) for k in all_keys(keys, session, [stream])}) == 1


def test_different_sessions_get_their_own_tag() -> None:
    keys = Keys("p")
    a, b = "a" * 32, "b" * 32
    assert hash_slot(keys.session(a)) == crc16_xmodem(a.encode()) % 16384
    assert keys.session(a) != keys.session(b)


def test_prefix_respected() -> None:
    keys = Keys("tenant-7")
    session, stream = "s" * 32, "S" * 12
    every = all_keys(keys, session, [stream])
    assert all(k.startswith("tenant-7:") for k in every)
    assert keys.pattern() == "tenant-7:*"
    assert Keys().prefix == "mcpgw"
    assert Keys().session(session).startswith("mcpgw:")


def test_layout() -> None:
    keys = Keys("p")
    g, s = "G" * 32, "S" * 12
    assert keys.session(g) == f"p:{{{g}}}:session"
    assert keys.streams(g) == f"p:{{{g}}}:streams"
    assert keys.events(g, s) == f"p:{{{g}}}:x:{s}"
    assert keys.meta(g, s) == f"p:{{{g}}}:m:{s}"
    assert keys.lease(g, s) == f"p:{{{g}}}:lease:{s}"
    assert keys.stream_keys(g, s) == (keys.events(g, s), keys.meta(g, s), keys.lease(g, s))


def test_stream_keys_differ_per_stream() -> None:
    keys = Keys("p")
    g = "G" * 32
    first = keys.stream_keys(g, "A" * 12)
    second = keys.stream_keys(g, "B" * 12)
    assert not set(first) & set(second)
    assert len(set(first)) == 3
    assert keys.session(g) not in first + second and keys.streams(g) not in first + second


def test_replica_and_session_patterns_match_only_their_keys() -> None:
    keys = Keys("tenant[1]*")
    assert keys.replica("h:1:ab") == "tenant[1]*:replica:h:1:ab"
    assert keys.replica_of(keys.replica("h:1:ab")) == "h:1:ab"
    assert keys.session_of(keys.session("G123")) == "G123"
    # Redis MATCH is a glob; the prefix's own glob characters are escaped
    unescape = str.maketrans({"\\": ""})
    assert keys.replica_pattern() == "tenant\\[1\\]\\*:replica:*"
    assert keys.session_pattern("G1").translate(unescape) == "tenant[1]*:{G1*}:session"
    assert keys.session_pattern().endswith(":{*}:session")


def test_claim_keys_are_the_session_streams_and_requests_keys() -> None:
    keys = Keys("p")
    assert keys.claim_keys("S1") == (keys.session("S1"), keys.streams("S1"), keys.requests("S1"))
