"""SSE encoder and incremental parser (WHATWG HTML §9.2.6)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.wire import sse
from gateway.wire.sse import Event, Parser, SSEError


def feed_all(parser: Parser, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


# --- encode -----------------------------------------------------------------------------------


def test_encode_simple() -> None:
    assert sse.encode("hello") == b"data: hello\n\n"
    assert sse.encode('{"a":1}', id="abc.1") == b'id: abc.1\ndata: {"a":1}\n\n'


def test_encode_all_fields_in_order() -> None:
    assert sse.encode("x", id="s.2", event="message", retry=1500) == (
        b"id: s.2\nevent: message\nretry: 1500\ndata: x\n\n"
    )


def test_encode_multiline_data() -> None:
    assert sse.encode("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert sse.encode("a\n\nb") == b"data: a\ndata:\ndata: b\n\n"
    assert sse.encode("trailing\n") == b"data: trailing\ndata:\n\n"


def test_encode_priming_event() -> None:
    # 2025-11-25: a priming event carries an id and an empty data field
    assert sse.encode(None, id="stream123456.0") == b"id: stream123456.0\ndata:\n\n"
    assert sse.encode("") == b"data:\n\n"
    (event,) = Parser().feed(sse.encode(None, id="stream123456.0"))
    assert event == Event(data="", id="stream123456.0")


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "\n"])
def test_encode_rejects_bad_ids(bad: str) -> None:
    with pytest.raises(SSEError):
        sse.encode("x", id=bad)


def test_encode_unicode() -> None:
    assert sse.encode("héllo ✓") == "data: héllo ✓\n\n".encode()


def test_comment_and_retry_hint() -> None:
    assert sse.comment("keep-alive") == sse.KEEPALIVE
    assert sse.retry_hint(250) == b"retry: 250\n\n"
    parser = Parser()
    assert parser.feed(sse.KEEPALIVE) == []
    assert parser.feed(sse.retry_hint(250)) == [Event(retry=250)]


# --- parser -------------------------------------------------------------------------------------

STREAM = (
    b": hello\n\n"
    b'id: a.1\nevent: message\ndata: {"x": 1}\n\n'
    b"data: line one\ndata: line two\n\n"
    b"id: a.2\n\n"
    b"retry: 3000\ndata:no-space\n\n"
)
EXPECTED = [
    Event(data='{"x": 1}', id="a.1", event="message"),
    Event(data="line one\nline two"),
    Event(id="a.2"),
    Event(data="no-space", retry=3000),
]


def test_parser_whole_stream() -> None:
    assert Parser().feed(STREAM) == EXPECTED


def test_parser_byte_by_byte() -> None:
    parser = Parser()
    events = feed_all(parser, [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert events == EXPECTED


@pytest.mark.parametrize("eol", [b"\r\n", b"\r", b"\n"])
def test_parser_line_endings(eol: bytes) -> None:
    stream = STREAM.replace(b"\n", eol)
    assert Parser().feed(stream) == EXPECTED
    assert feed_all(Parser(), [stream[i : i + 1] for i in range(len(stream))]) == EXPECTED


def test_parser_crlf_split_across_chunks() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []  # the LF completes the CRLF, it is not an empty line
    assert parser.feed(b"\r") == [Event(data="a")]
    assert parser.feed(b"\ndata: b\r\n\r\n") == [Event(data="b")]


def test_parser_cr_then_empty_chunk_then_lf() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [Event(data="a")]


def test_parser_lone_cr_is_a_line_end() -> None:
    assert Parser().feed(b"data: a\rdata: b\r\r") == [Event(data="a\nb")]


def test_parser_comments_ignored() -> None:
    parser = Parser()
    assert parser.feed(b": one\n:two\n\n") == []
    assert parser.feed(b"data: x\n: in the middle\ndata: y\n\n") == [Event(data="x\ny")]


def test_parser_only_one_leading_space_stripped() -> None:
    assert Parser().feed(b"data:  two spaces\n\n") == [Event(data=" two spaces")]
    assert Parser().feed(b"data\n\n") == [Event(data="")]


def test_parser_id_only_block() -> None:
    assert Parser().feed(b"id: s.7\n\n") == [Event(data=None, id="s.7")]


def test_parser_id_with_nul_ignored() -> None:
    assert Parser().feed(b"id: a\0b\ndata: x\n\n") == [Event(data="x")]


def test_parser_retry() -> None:
    assert Parser().feed(b"retry: 1000\n\n") == [Event(retry=1000)]
    assert Parser().feed(b"retry:250\ndata: x\n\n") == [Event(data="x", retry=250)]
    # non-digit retry values are ignored (but the block still counts)
    assert Parser().feed(b"retry: 1e3\ndata: x\n\n") == [Event(data="x")]
    assert Parser().feed(b"retry: -5\ndata: x\n\n") == [Event(data="x")]


@pytest.mark.parametrize("raw", ["retry: ²\n\n".encode(), b"retry: " + b"1" * 5000 + b"\n\n"])
def test_parser_retry_non_ascii_digits_do_not_crash(raw: bytes) -> None:
    try:
        events = Parser().feed(raw)
    except SSEError:
        return  # rejecting is fine too
    assert all(event.retry is None for event in events)


def test_parser_unknown_fields_ignored() -> None:
    assert Parser().feed(b"foo: bar\ndata: x\n\n") == [Event(data="x")]


def test_parser_multiple_events_in_one_chunk() -> None:
    chunk = b"".join(sse.encode(str(i), id=f"s.{i}") for i in range(5))
    assert Parser().feed(chunk) == [Event(data=str(i), id=f"s.{i}") for i in range(5)]


def test_parser_empty_lines_without_fields_dispatch_nothing() -> None:
    assert Parser().feed(b"\n\n\r\n\r\r") == []


def test_parser_incomplete_event_waits() -> None:
    parser = Parser()
    assert parser.feed(b"data: x\n") == []
    assert parser.feed(b"data: y") == []
    assert parser.feed(b"\n\n") == [Event(data="x\ny")]


def test_parser_max_line_partial_line() -> None:
    parser = Parser(max_line=16)
    assert parser.feed(b"data: 0123456789") == []  # exactly 16 bytes pending is allowed
    with pytest.raises(SSEError):
        parser.feed(b"a")


def test_parser_max_line_complete_line() -> None:
    parser = Parser(max_line=16)
    with pytest.raises(SSEError):
        parser.feed(b"data: 0123456789abcdef\n\n")


def test_parser_max_line_allows_many_short_lines() -> None:
    parser = Parser(max_line=16)
    chunk = b"data: short\n" * 100 + b"\n"
    (event,) = parser.feed(chunk)
    assert event.data == "\n".join(["short"] * 100)


def test_parser_non_utf8() -> None:
    with pytest.raises(SSEError):
        Parser().feed(b"data: \xff\xfe\n\n")


def test_parser_non_utf8_in_comment_is_ignored() -> None:
    assert Parser().feed(b": \xff\ndata: x\n\n") == [Event(data="x")]


# --- properties ----------------------------------------------------------------------------------

ids = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=["Cs"]), max_size=20)
datas = st.text(max_size=200)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


def normalized(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.tuples(datas, st.none() | ids), min_size=1, max_size=5), cuts=cuts)
def test_roundtrip_under_any_chunking(events: list[tuple[str, str | None]], cuts: list[int]) -> None:
    stream = b"".join(sse.encode(data, id=event_id) for data, event_id in events)
    parsed = feed_all(Parser(), split_at(stream, cuts))
    assert parsed == [Event(data=normalized(data), id=event_id) for data, event_id in events]


@settings(max_examples=100, deadline=None)
@given(events=st.lists(st.tuples(datas, st.none() | ids), min_size=1, max_size=3))
def test_roundtrip_byte_by_byte(events: list[tuple[str, str | None]]) -> None:
    stream = b"".join(sse.encode(data, id=event_id) for data, event_id in events)
    parsed = feed_all(Parser(), [stream[i : i + 1] for i in range(len(stream))])
    assert parsed == [Event(data=normalized(data), id=event_id) for data, event_id in events]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), cuts=cuts, max_line=st.integers(min_value=1, max_value=64))
def test_parser_only_raises_sse_error(raw: bytes, cuts: list[int], max_line: int) -> None:
    parser = Parser(max_line=max_line)
    try:
        events = feed_all(parser, split_at(raw, cuts))
    except SSEError:
        return
    for event in events:
        assert isinstance(event, Event)
        assert event.data is None or isinstance(event.data, str)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(
        st.sampled_from(
            [b"data", b"id", b"retry", b"event", b":", b" ", b"\r", b"\n", b"1", b"x", b"\xff", b"\xc3\xa9"]
        ),
        max_size=60,
    ),
    cuts=cuts,
)
def test_parser_sse_shaped_noise_only_raises_sse_error(raw: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(raw)
    try:
        events = feed_all(Parser(max_line=32), split_at(stream, cuts))
    except SSEError:
        return
    assert all(isinstance(event, Event) for event in events)


line_ends = st.sampled_from([b"\n", b"\r", b"\r\n"])
field_lines = st.sampled_from([b"data: a", b"data:b c", b"id: 7", b"event: x", b": note", b"retry: 5", b"", b"data"])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(field_lines, line_ends), max_size=20), cuts=cuts)
def test_any_mix_of_line_ends_parses_as_its_lf_only_form(lines: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    """CR, LF and CRLF are the same line end, whichever path of `feed` a chunk takes (LF-only
    chunks are split at once, others searched line by line)."""
    # A lone CR, then an empty line ended by LF, is one CRLF: not the two lines of its LF form.
    assume(not any(end == b"\r" and nxt == (b"", b"\n") for (_, end), nxt in itertools.pairwise(lines)))
    mixed = b"".join(text + end for text, end in lines)
    lf_only = b"".join(text + b"\n" for text, _ in lines)
    assert feed_all(Parser(), split_at(mixed, cuts)) == feed_all(Parser(), [lf_only])
