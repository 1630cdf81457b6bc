"""Which tools of which pool the gateway runs as tasks: the `--task-tools` setting, parsed.

    --task-tools POOL=NAME[:required][,NAME[:required]...]

Names are shell-style globs (`fnmatch`, case-sensitive); the first pattern of a pool that matches
a tool decides. `:required` marks a tool that can only be served as a task: a request that did not
negotiate the extension gets -32021 instead of a plain synchronous call.

    --task-sync-input POOL=NAME[,NAME...]

Task tools that ask for input *before* their long work (the MRTR -> task composition): a call that
carries no `inputResponses` is forwarded synchronously, so the upstream's InputRequiredResult goes
back to the client as it is; the call that carries the answers becomes the task.
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
    sync_input: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def asks_first(self, pool: str, tool: str) -> bool:
        """tasks §Task Creation: MRTR rounds before the task SHOULD be resolved synchronously."""
        return any(fnmatch.fnmatchcase(tool, glob) for glob in self.sync_input.get(pool, ()))

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


def _pool_items(setting: str, specs: Iterable[str], known: set[str], kind: str) -> Iterable[tuple[str, str, list[str]]]:
    """(pool, the spec part, its comma-separated items) of every `POOL=ITEM[,ITEM...]` value."""
    for spec in specs:
        for part in spec.split(";"):
            if not part.strip():
                continue
            pool, sep, names = part.partition("=")
            pool = pool.strip()
            if not sep or not pool:
                raise ConfigError(f"{setting}: expected `POOL=NAME[:required][,...]`, got {part!r}")
            if pool not in known:
                raise ConfigError(f"{setting}: {pool!r} is not {kind} (known: {sorted(known)})")
            items = [item.strip() for item in names.split(",") if item.strip()]
            if not items:
                raise ConfigError(f"{setting}: pool {pool!r} lists no tool in {part!r}")
            yield pool, part, items


def parse_task_tools(specs: Iterable[str], pools: Iterable[str], sync_input: Iterable[str] = ()) -> TaskTools:
    """Parse every `--task-tools` (and `--task-sync-input`) value; pools must be upstream pools."""
    parsed: dict[str, list[ToolPattern]] = {}
    for pool, part, items in _pool_items("task_tools", specs, set(pools), "an upstream pool"):
        parsed.setdefault(pool, []).extend(parse_pattern(item, part) for item in items)
    asks: dict[str, list[str]] = {}
    for pool, _, items in _pool_items("task_sync_input", sync_input, set(parsed), "a pool with task tools"):
        asks.setdefault(pool, []).extend(items)
    return TaskTools(
        {pool: tuple(patterns) for pool, patterns in parsed.items()},
        {pool: tuple(globs) for pool, globs in asks.items()},
    )
