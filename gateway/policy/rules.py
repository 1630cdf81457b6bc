"""A policy file's text made into plain rules, before any CEL: the YAML shape, rates, bursts.

    deny:   [CEL, ...]      any true rule refuses the request
    allow:  [CEL, ...]      then allowed if any is true; absent or empty allows everything
    limits: [{when: CEL, key: CEL, rate: N/s|N/min|N/h, burst: N}, ...]

Pure: no CEL here, so a bad shape is reported with the rule it belongs to before compiling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from gateway.errors import ConfigError

_PERIODS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class LimitRule:
    """One quota: requests matching `when` share the bucket named by `key`'s value."""

    when: str
    key: str
    per_second: float
    burst: int
    text: str  # how the rule reads in errors, metrics and audit records

    @property
    def interval(self) -> float:
        """Seconds between two tokens (GCRA's emission interval)."""
        return 1.0 / self.per_second


@dataclass(frozen=True)
class PolicyRules:
    deny: tuple[str, ...]
    allow: tuple[str, ...]
    limits: tuple[LimitRule, ...]

    @property
    def size(self) -> int:
        return len(self.deny) + len(self.allow) + len(self.limits)


def parse_rate(text: object) -> float:
    """`10/s`, `600/min`, `5/h` -> requests per second."""
    match = _RATE.match(str(text))
    if match is None or match.group(2) not in _PERIODS or float(match.group(1)) <= 0:
        raise ConfigError(f"policy: rate {text!r}: expected N/s, N/min or N/h with N > 0")
    return float(match.group(1)) / _PERIODS[match.group(2)]


def _expressions(document: dict[str, Any], section: str) -> tuple[str, ...]:
    items = document.get(section) or []
    if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
        raise ConfigError(f"policy: `{section}` must be a list of CEL expressions (strings)")
    return tuple(item.strip() for item in items)


def _limit(item: object, index: int) -> LimitRule:
    if not isinstance(item, dict) or not {"rate", "key"} <= set(item) or set(item) - {"when", "key", "rate", "burst"}:
        raise ConfigError(f"policy: limits[{index}]: expected keys when (optional), key, rate, burst (optional)")
    when = str(item.get("when") or "true").strip()
    key = str(item["key"]).strip()
    per_second = parse_rate(item["rate"])
    burst = item.get("burst", 1)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise ConfigError(f"policy: limits[{index}]: burst must be an integer >= 1")
    text = f"limits[{index}]: when {when} key {key} rate {item['rate']} burst {burst}"
    return LimitRule(when=when, key=key, per_second=per_second, burst=burst, text=text)


def parse(text: str) -> PolicyRules:
    """The rules of a policy file's text; ConfigError names what is wrong."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy: not valid YAML: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError("policy: expected a mapping with deny, allow and limits")
    unknown = set(document) - {"deny", "allow", "limits"}
    if unknown:
        raise ConfigError(f"policy: unknown section(s) {sorted(unknown)} (expected deny, allow, limits)")
    limits = document.get("limits") or []
    if not isinstance(limits, list):
        raise ConfigError("policy: `limits` must be a list")
    return PolicyRules(
        deny=_expressions(document, "deny"),
        allow=_expressions(document, "allow"),
        limits=tuple(_limit(item, i) for i, item in enumerate(limits)),
    )
