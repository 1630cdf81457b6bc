"""What metrics may say about an upstream instance: its pool, and its host:port.

An upstream URL may carry credentials (`svc:secret@host`) or a token in its query string; a
metric label is served to whoever scrapes, so labels never carry the URL itself (issue 35).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit


def host_port(url: str) -> str:
    """`host:port` of an upstream URL (the scheme's port when none is given); never user, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "unknown"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def instance_labels(instances: Sequence[str]) -> dict[str, str]:
    """Each instance URL of a pool -> its label: host:port, with `#index` where two share one."""
    labels = [host_port(url) for url in instances]
    return {
        url: label if labels.count(label) == 1 else f"{label}#{index}"
        for index, (url, label) in enumerate(zip(instances, labels, strict=True))
    }


def pool_of(pools: Iterable[tuple[str, Sequence[str]]]) -> dict[str, str]:
    """Instance URL -> the name of the first pool that lists it (the upstream latency's label)."""
    names: dict[str, str] = {}
    for name, instances in pools:
        for url in instances:
            names.setdefault(url, name)
    return names
