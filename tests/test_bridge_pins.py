"""gateway/bridging/onto_2026/pins.py: `--upstream-era POOL=auto|2025|2026`."""

from __future__ import annotations

import pytest

from gateway.bridging.onto_2026.answers import input_id, stream_of
from gateway.bridging.onto_2026.pins import EraPins, parse_pins
from gateway.config import Settings
from gateway.errors import ConfigError


def test_pins_parse_repeated_and_joined_values() -> None:
    assert parse_pins(["a=2026;b=2025", "c=auto"]) == {"a": "2026", "b": "2025", "c": "auto"}
    with pytest.raises(ConfigError):
        parse_pins(["a=2027"])
    with pytest.raises(ConfigError):
        parse_pins(["2026"])


async def test_era_of_reads_the_pin_and_defaults_to_auto() -> None:
    pins = EraPins(parse_pins(["a=2026"]))
    assert pins.any_modern()
    assert await pins.era_of("a", "http://x") == "2026"
    assert await pins.era_of("b") == "auto"
    assert not EraPins({}).any_modern()


def test_setting_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGW_UPSTREAM_ERA", "default=2026")
    assert Settings().upstream_era == ["default=2026"]


def test_input_request_ids_name_their_stream() -> None:
    assert stream_of(input_id("AbCdEfGhIjKl", 2, "k.with.dots")) == "AbCdEfGhIjKl"
    assert stream_of("other") is None
    assert stream_of(7) is None
