"""The policy file: compiled at start-up (a bad file stops the start), re-read when it changes.

Every replica polls the file's identity (inode, size, mtime) a few times a second: a changed file is
read and compiled; one that fails to parse or compile is refused with a log line naming the error,
and the policy in force stays. Polling needs no coordination between replicas and catches every way
a file is replaced (editor rename, ConfigMap symlink swap, `cp`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from gateway.errors import ConfigError
from gateway.policy import rules
from gateway.policy.counters import PolicyCounters
from gateway.policy.engine import CompiledPolicy

log = logging.getLogger("gateway.policy")

POLL_INTERVAL = 0.5  # s: a change takes effect on every replica well within the 2 s promised


def load(path: str) -> CompiledPolicy:
    """Read and compile `path`; ConfigError names what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"policy: cannot read {path}: {exc}") from None
    return CompiledPolicy(rules.parse(text), source=path)


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PolicySource:
    """Holds the policy in force; `run()` (owned by the supervisor) swaps in each good new version."""

    def __init__(
        self,
        path: str,
        counters: PolicyCounters,
        *,
        interval: float = POLL_INTERVAL,
        loader: Callable[[str], CompiledPolicy] = load,
    ) -> None:
        self.path = path
        self._counters = counters
        self._interval = interval
        self._loader = loader
        self._seen = _identity(path)
        self.current = loader(path)  # at start-up a bad file raises: the process exits 2
        counters.reloads.labels("loaded").inc()
        log.info("policy %s: %d rule(s)", path, self.current.rules.size)

    def check(self) -> bool:
        """Reload if the file changed; True when a new policy is in force."""
        seen = _identity(self.path)
        if seen == self._seen or seen is None:
            return False  # unchanged, or vanished mid-swap: keep what is in force
        self._seen = seen
        try:
            policy = self._loader(self.path)
        except ConfigError as exc:
            self._counters.reloads.labels("refused").inc()
            log.error("policy %s refused, the previous one stays in force: %s", self.path, exc.message)
            return False
        self.current = policy
        self._counters.reloads.labels("loaded").inc()
        log.info("policy %s reloaded: %d rule(s)", self.path, policy.rules.size)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()
