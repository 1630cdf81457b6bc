"""Which pools speak only 2026-07-28, from `--upstream-era POOL=auto|2025|2026|both` (the pin).

`era_of` is the one question the bridge asks; the per-instance detection (probed, kept in Redis)
answers it later in place of the pin, with the pin still winning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.errors import ConfigError

ERAS = ("auto", "2025", "2026", "both")  # both: the instance speaks both eras, nothing is bridged


def parse_pins(values: Sequence[str]) -> dict[str, str]:
    """`POOL=ERA` items (repeatable, `;` separates several in one value) -> {pool: era}."""
    pins: dict[str, str] = {}
    for value in values:
        for item in value.split(";"):
            if not item.strip():
                continue
            pool, sep, era = item.partition("=")
            if not sep or not pool.strip() or era.strip() not in ERAS:
                raise ConfigError(f"--upstream-era wants POOL=auto|2025|2026|both, not {item!r}")
            pins[pool.strip()] = era.strip()
    return pins


class EraPins:
    def __init__(self, pins: Mapping[str, str]) -> None:
        self._pins = dict(pins)

    def any_modern(self) -> bool:
        return "2026" in self._pins.values()

    async def era_of(self, pool: str, instance: str | None = None) -> str:
        """`2026`, `2025` or `auto` (as the client speaks) for a pool's instance."""
        return self._pins.get(pool, "auto")
