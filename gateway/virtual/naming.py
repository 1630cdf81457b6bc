"""A virtual server's configuration and its names: `<pool><separator><name>` for tools and prompts.

Pure: parsed once at start-up (a bad `--virtual-servers` fails there), then only string work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import ConfigError


@dataclass(frozen=True)
class VirtualServer:
    """`name` is served at /mcp/NAME; `members` are pool names, in the order that wins URI conflicts."""

    name: str
    members: tuple[str, ...]
    separator: str = "__"

    def prefixed(self, pool: str, name: str) -> str:
        return f"{pool}{self.separator}{name}"

    def split(self, name: str) -> tuple[str, str] | None:
        """(member pool, the member's own name) of a prefixed name; None when no member's prefix fits."""
        for pool in self.members:
            head = pool + self.separator
            if name.startswith(head) and len(name) > len(head):
                return pool, name[len(head) :]
        return None


def parse_virtual_servers(specs: Iterable[str], pools: Iterable[str], separator: str) -> tuple[VirtualServer, ...]:
    """Every `NAME=POOL[,POOL...]` (`;` separates servers in one value), checked against the pools."""
    known = list(pools)
    servers: dict[str, VirtualServer] = {}
    for spec in specs:
        for part in spec.split(";"):
            if not part.strip():
                continue
            name, sep, members_text = part.strip().partition("=")
            name = name.strip()
            members = tuple(m.strip() for m in members_text.split(",") if m.strip())
            if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"virtual_servers: expected `NAME=POOL[,POOL...]`, got {part!r}")
            if name in known:
                raise ConfigError(f"virtual_servers: {name!r} is already an upstream pool's name")
            if name in servers:
                raise ConfigError(f"virtual_servers: {name!r} is defined twice")
            if not members or len(members) > MAX_MEMBERS:
                raise ConfigError(f"virtual_servers: {name!r} needs 1 to {MAX_MEMBERS} member pools")
            if len(set(members)) != len(members):
                raise ConfigError(f"virtual_servers: {name!r} names a member pool twice")
            for pool in members:
                if pool not in known:
                    raise ConfigError(f"virtual_servers: {name!r}: unknown pool {pool!r}")
                if separator in pool:
                    # A prefix must split one way only: `a__b__x` could be pool `a` or pool `a__b`.
                    raise ConfigError(f"virtual_servers: pool {pool!r} contains the separator {separator!r}")
            servers[name] = VirtualServer(name, members, separator)
    return tuple(servers.values())


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MAX_MEMBERS = len(_ALPHABET) - 1
NOTIFICATIONS = _ALPHABET[-1]  # the first character of a session's notification stream ids


def member_stream_id(index: int, random_id: str) -> str:
    """A call stream's id (`wire/cursor.py`'s 12 characters) whose first names the member it relays,
    so a resume on any replica finds the member without a lookup."""
    return _ALPHABET[index] + random_id[1:]


def notification_stream_id(random_id: str) -> str:
    return NOTIFICATIONS + random_id[1:]


def member_of_stream(server: VirtualServer, stream: str) -> str | None:
    index = _ALPHABET.find(stream[:1])
    return server.members[index] if 0 <= index < len(server.members) else None
