"""Which tools of which pool the gateway runs as tasks: the `--task-tools` setting, parsed.

    --task-tools POOL=NAME[:required][,NAME[:required]...]

Names are shell-style globs (`fnmatch`, case-sensitive); the first pattern of a pool that matches
a tool decides. `:required` marks a tool that can only be served as a task: a request that did not
negotiate the extension gets -32021 instead of a plain synchronous call.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.errors import ConfigError

MODIFIERS = {"": "optional", "required": "required"}


class TaskSupport(enum.Enum):
    OPTIONAL = "optional"  # a task when the request negotiated the extension, else a plain call
    REQUIRED = "required"  # a task, or -32021 when the request did not negotiate the extension


@dataclass(frozen=True)
class ToolPattern:
    glob: str
    support: TaskSupport

    def matches(self, tool: str) -> bool:
        return fnmatch.fnmatchcase(tool, self.glob)


@dataclass(frozen=True)
class TaskTools:
    """Per pool, the ordered task-tool patterns."""

    pools: Mapping[str, tuple[ToolPattern, ...]] = field(default_factory=dict)

    def support(self, pool: str, tool: str) -> TaskSupport | None:
        """How `tool` of `pool` is served as a task; None: not a task tool (forwarded as is)."""
        return next((p.support for p in self.pools.get(pool, ()) if p.matches(tool)), None)

    def serves(self, pool: str) -> bool:
        """Does the gateway serve tasks for this pool (advertise the extension, answer `tasks/*`)?"""
        return bool(self.pools.get(pool))


def parse_pattern(item: str, spec: str) -> ToolPattern:
    glob, _, modifier = item.strip().partition(":")
    glob = glob.strip()
    if not glob:
        raise ConfigError(f"task_tools: empty tool name in {spec!r}")
    if modifier.strip() not in MODIFIERS:
        raise ConfigError(f"task_tools: unknown modifier {modifier!r} in {spec!r} (only `:required`)")
    return ToolPattern(glob, TaskSupport(MODIFIERS[modifier.strip()]))


def parse_task_tools(specs: Iterable[str], pools: Iterable[str]) -> TaskTools:
    """Parse every `--task-tools` value; a pool named here must be a configured upstream pool."""
    known = set(pools)
    parsed: dict[str, list[ToolPattern]] = {}
    for spec in specs:
        for part in spec.split(";"):
            if not part.strip():
                continue
            pool, sep, names = part.partition("=")
            pool = pool.strip()
            if not sep or not pool:
                raise ConfigError(f"task_tools: expected `POOL=NAME[:required][,...]`, got {part!r}")
            if pool not in known:
                raise ConfigError(f"task_tools: {pool!r} is not an upstream pool (known: {sorted(known)})")
            patterns = [parse_pattern(item, part) for item in names.split(",") if item.strip()]
            if not patterns:
                raise ConfigError(f"task_tools: pool {pool!r} lists no tool in {part!r}")
            parsed.setdefault(pool, []).extend(patterns)
    return TaskTools({pool: tuple(patterns) for pool, patterns in parsed.items()})
