"""Gateway event ids and the pure resume decision.

An event id is `S.N`: `S` names the stream (random, unique within its session) and `N` is
the event's sequence number in that stream (1, 2, ...; 0 is the priming event). The Redis
entry id of event N is `N-0`, so a cursor maps to a Redis range without lookups, and a gap
(events trimmed after the cursor) is visible as `first retained N > cursor + 1`.
2025-11-25 transports §Resumability: event ids should encode the stream they belong to.
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass

from gateway import errors

_STREAM_ID_RE = re.compile(r"[A-Za-z0-9_-]{12}")
_EVENT_ID_RE = re.compile(r"([A-Za-z0-9_-]{12})\.(0|[1-9][0-9]{0,17})")


@dataclass(frozen=True)
class Cursor:
    stream: str
    seq: int

    def __str__(self) -> str:
        return f"{self.stream}.{self.seq}"


def new_stream_id() -> str:
    """12 chars, 72 random bits: unique within the session (every key and lookup of a stream is
    under its session's, whose id is the secret one), so not a `secrets` token: that costs a
    getrandom() system call on every request. The module's generator is seeded from the OS and
    seeded again in a forked child."""
    return base64.urlsafe_b64encode(random.getrandbits(72).to_bytes(9, "big")).decode("ascii")


def valid_stream_id(value: str) -> bool:
    return _STREAM_ID_RE.fullmatch(value) is not None


def event_id(stream: str, seq: int) -> str:
    return f"{stream}.{seq}"


def parse_event_id(value: str) -> Cursor:
    """Parse a `Last-Event-ID`; anything the gateway could not have issued is a 400."""
    match = _EVENT_ID_RE.fullmatch(value.strip())
    if match is None:
        raise errors.BadLastEventId(f"Bad Request: malformed Last-Event-ID {value[:80]!r}")
    return Cursor(match.group(1), int(match.group(2)))


def redis_id(seq: int) -> str:
    return f"{seq}-0"


def seq_of(entry_id: str | bytes) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


# --- the resume decision -----------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """Replay entries after `after` (a sequence number), then tail."""

    after: int


@dataclass(frozen=True)
class Gap:
    """Events after the cursor are gone; the pending requests get errors."""

    reason: str


def decide(cursor_seq: int, *, meta_seq: int | None, first_retained: int | None) -> Replay | Gap:
    """Decide how to resume from `cursor_seq`.

    `meta_seq` is the highest sequence number written (None when the stream's metadata has
    vanished, e.g. Redis restarted or failed over); `first_retained` is the oldest entry still
    in the Redis stream (None when it is empty or expired).
    DESIGN "Gaps": a cursor older than the first retained entry is never skipped silently.
    """
    if meta_seq is None:
        return Gap("the stream's state was lost (store restarted or expired)")
    if cursor_seq > meta_seq:
        return Gap(f"cursor {cursor_seq} is ahead of the stream ({meta_seq}); the store lost events")
    if cursor_seq == meta_seq:
        return Replay(cursor_seq)
    if first_retained is None:
        return Gap(f"events after {cursor_seq} expired from the store")
    if first_retained > cursor_seq + 1:
        return Gap(f"events {cursor_seq + 1}..{first_retained - 1} were trimmed from the store")
    return Replay(cursor_seq)
