"""`mcp-gateway audit`: read the audit trail's Redis stream, filtered, once or following it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from gateway.errors import ConfigError
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BLOCK_MS = 1000
PAGE = 1000
COLUMNS = ("principal", "era", "method", "name", "request_id", "decision", "outcome", "status", "duration_ms")


def since_ms(text: str | None, now: float | None = None) -> int:
    """`--since`: `90s`, `15m`, `2h`, `1d` ago, an ISO 8601 time or Unix seconds -> stream ms."""
    if not text:
        return 0
    now = time.time() if now is None else now
    relative = _RELATIVE.match(text)
    if relative:
        return int((now - float(relative.group(1)) * _UNITS[relative.group(2)]) * 1000)
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected 15m, 2h, 1d, an ISO 8601 time or Unix seconds") from None


def line(record: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(record)
    when = datetime.fromtimestamp(float(record.get("ts", 0))).isoformat(timespec="milliseconds")
    cells = [str(record.get(name, "")) for name in COLUMNS]
    return f"{when} {' '.join(cells)} rule={record.get('rule', '')}"


async def records(
    redis: Redis, keys: Keys, *, since: int, follow: bool, keep: Callable[[dict[str, Any]], bool]
) -> AsyncIterator[dict[str, Any]]:
    """The stream's records from `since` (ms), then, with `follow`, each new one as it comes."""
    key = keys.audit()
    start = f"{since}-0" if since else "-"
    last = f"{since}-0"  # where following starts when nothing was there yet
    while True:  # what the stream holds now, in pages
        with translated():
            page: Any = await redis.xrange(key, min=start, count=PAGE)  # [(id, fields), ...]
        for entry, fields in page:
            last = _text(entry)
            record = _record(fields)
            if keep(record):
                yield record
        if len(page) < PAGE:
            break
        start = f"({last}"
    while follow:  # then each new one
        with translated():
            found: Any = await redis.xread({key: last}, count=PAGE, block=BLOCK_MS)  # [(key, entries)]
        for _, items in found:
            for entry, fields in items:
                last = _text(entry)
                record = _record(fields)
                if keep(record):
                    yield record


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(fields: dict[Any, Any]) -> dict[str, Any]:
    raw = fields.get(b"r", fields.get("r", b"{}"))
    record: dict[str, Any] = json.loads(raw)
    return record
