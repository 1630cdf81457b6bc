"""Event ids `S.N` and the pure resume decision."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import errors
from gateway.wire import cursor
from gateway.wire.cursor import Cursor, Gap, Replay

STREAM = "AbC-_0123xyz"
stream_ids = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
    min_size=12,
    max_size=12,
)
seqs = st.integers(min_value=0, max_value=10**18 - 1)


@given(stream=stream_ids, seq=seqs)
def test_event_id_roundtrip(stream: str, seq: int) -> None:
    value = cursor.event_id(stream, seq)
    parsed = cursor.parse_event_id(value)
    assert parsed == Cursor(stream, seq)
    assert str(parsed) == value


def test_new_stream_id() -> None:
    made = {cursor.new_stream_id() for _ in range(500)}
    assert len(made) == 500
    assert all(cursor.valid_stream_id(s) for s in made)
    assert cursor.parse_event_id(cursor.event_id(next(iter(made)), 0)).seq == 0


def test_parse_tolerates_surrounding_whitespace() -> None:
    assert cursor.parse_event_id(f"  {STREAM}.5\t") == Cursor(STREAM, 5)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "\t\n",
        STREAM,  # no dot
        f"{STREAM}5",
        f"{STREAM}.",  # no seq
        f".{5}",
        f"{STREAM[:11]}.5",  # stream too short
        f"{STREAM}x.5",  # stream too long
        f"{STREAM[:11]}!.5",  # bad character
        f"{STREAM}.-1",  # negative
        f"{STREAM}.+1",
        f"{STREAM}.01",  # leading zero
        f"{STREAM}.00",
        f"{STREAM}.1" + "0" * 18,  # 19 digits: more than the gateway could have issued
        f"{STREAM}.99999999999999999999999999",
        f"{STREAM}.1.2",  # extra dots
        f"{STREAM}..1",
        f"a.{STREAM}.1",
        f"{STREAM}.1 2",
        f"{STREAM}.1e3",
        f"{STREAM}.١٢",  # non-ASCII digits
        "x" * 1000,
    ],
)
def test_malformed_event_ids(value: str) -> None:
    with pytest.raises(errors.BadLastEventId) as info:
        cursor.parse_event_id(value)
    assert info.value.status == 400
    assert len(info.value.message) < 200  # the echo of hostile input is bounded


def test_largest_accepted_seq() -> None:
    assert cursor.parse_event_id(f"{STREAM}.{'9' * 18}").seq == 10**18 - 1


def test_redis_id_and_seq_of() -> None:
    assert cursor.redis_id(0) == "0-0"
    assert cursor.redis_id(42) == "42-0"
    assert cursor.seq_of("42-0") == 42
    assert cursor.seq_of(b"7-0") == 7
    assert cursor.seq_of(cursor.redis_id(123456789)) == 123456789


@given(seq=st.integers(min_value=0, max_value=2**63 - 1))
def test_redis_id_roundtrip(seq: int) -> None:
    assert cursor.seq_of(cursor.redis_id(seq)) == seq
    assert cursor.seq_of(cursor.redis_id(seq).encode()) == seq


# --- decide -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cursor_seq", "meta_seq", "first_retained", "expected"),
    [
        (3, None, 1, Gap),  # meta missing
        (0, None, None, Gap),
        (6, 5, 1, Gap),  # cursor ahead of meta: the store lost events
        (1, 0, None, Gap),
        (5, 5, 1, Replay(5)),  # up to date
        (5, 5, None, Replay(5)),  # up to date even when the events expired
        (0, 0, None, Replay(0)),  # priming cursor of an empty stream
        (2, 10, 5, Gap),  # trimmed: 3 and 4 are gone
        (0, 10, 2, Gap),
        (3, 10, None, Gap),  # events after the cursor expired
        (3, 10, 4, Replay(3)),  # next one retained exactly
        (3, 10, 1, Replay(3)),
        (0, 10, 1, Replay(0)),
        (9, 10, 10, Replay(9)),
    ],
)
def test_decide(
    cursor_seq: int, meta_seq: int | None, first_retained: int | None, expected: Replay | type[Gap]
) -> None:
    result = cursor.decide(cursor_seq, meta_seq=meta_seq, first_retained=first_retained)
    if expected is Gap:
        assert isinstance(result, Gap)
        assert result.reason
    else:
        assert result == expected


@given(
    cursor_seq=st.integers(0, 1000),
    meta_seq=st.none() | st.integers(0, 1000),
    first_retained=st.none() | st.integers(1, 1000),
)
def test_decide_never_skips_silently(cursor_seq: int, meta_seq: int | None, first_retained: int | None) -> None:
    result = cursor.decide(cursor_seq, meta_seq=meta_seq, first_retained=first_retained)
    if isinstance(result, Replay):
        assert result.after == cursor_seq
        assert meta_seq is not None and cursor_seq <= meta_seq
        # either nothing is missing, or the next event after the cursor is still retained
        assert cursor_seq == meta_seq or (first_retained is not None and first_retained <= cursor_seq + 1)
