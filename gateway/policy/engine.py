"""The compiled policy: CEL programs over the request's variables, and the decision they make.

The CEL library is cel-expr-python (Google's C++ CEL behind a Python binding), chosen by measurement
(docs/decisions/0011-cel-library.md). It is the optional `policy` extra: imported only when a
policy is configured. Variables are declared, so an unknown variable or a rule that is not a
boolean fails at compile time (the file is refused); a rule that fails while running counts as
not matching for `allow` and as matching for `deny` and quota conditions (closed, not open).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.policy.rules import LimitRule, PolicyRules
from gateway.policy.variables import DECLARED

log = logging.getLogger("gateway.policy")

EXTRA_MISSING = (
    "--policy needs the CEL library of the `policy` extra: pip install 'mcp-session-gateway[policy]' (cel-expr-python)"
)
ERROR_KEY = "!error"  # the bucket of requests whose quota key failed to evaluate
MEMO = 4096  # decisions kept per policy version (their keys hold a token each)
CHAIN = 8  # allow rules per combined program: CEL bounds how deep `a ? 0 : (b ? 1 : ...)` nests (32 levels)


@dataclass(frozen=True)
class Decision:
    result: str  # "allow" or "deny"
    rule: str  # the deciding rule's text, or "default"
    limits: tuple[tuple[LimitRule, str], ...] = ()  # the quotas that apply, with their bucket's key


class _Rule:
    """One compiled expression and its source; logs its first run-time failure only."""

    __slots__ = ("failed", "program", "text")

    def __init__(self, program: Any, text: str) -> None:
        self.program = program
        self.text = text
        self.failed = False

    def value(self, activation: Any, error_type: Any) -> tuple[bool, Any]:
        """(ok, value): ok is False when the rule failed at run time."""
        try:
            result = self.program.eval(activation)
            if result.type() == error_type:
                self._failed(str(result.value()))
                return False, None
            return True, result.value()
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return False, None

    def _failed(self, reason: str) -> None:
        if not self.failed:
            self.failed = True
            log.warning("policy rule failed at run time (counted closed): %s: %s", self.text, reason)


class CompiledPolicy:
    """Deny rules, then allow rules, then the quotas that apply: one decision per request."""

    def __init__(self, rules: PolicyRules, source: str = "") -> None:
        try:
            from cel_expr_python import cel  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError(EXTRA_MISSING) from None
        self.rules = rules
        self.source = source
        self._cel = cel
        types = {"string": cel.Type.STRING, "map": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)}
        self._env = cel.NewEnv(variables={name: types[kind] for name, kind in DECLARED.items()})
        self._deny = [self._compile(text, "deny", boolean=True) for text in rules.deny]
        self._allow = [self._compile(text, "allow", boolean=True) for text in rules.allow]
        self._limits = [
            (limit, self._compile(limit.when, "limits.when", boolean=True), self._compile(limit.key, "limits.key"))
            for limit in rules.limits
        ]
        self._whole = self._combine()
        texts = [*rules.deny, *rules.allow, *(t for limit in rules.limits for t in (limit.when, limit.key))]
        # conservative: a rule that only mentions the word still gets the headers
        self.reads_headers = any("request" in text for text in texts)
        # A decision is a pure function of the variables. When no rule reads the arguments or the
        # headers, the rest is fixed by (token, client IP, pool, method, name): decisions are kept
        # under that key (this policy version only), and a repeated request makes no call into CEL.
        self.memoizable = not self.reads_headers and not any("mcp.arguments" in text for text in texts)
        self._memo: dict[Hashable, Decision] = {}

    def _combine(self) -> list[Any] | None:
        """Every deny and allow rule as a few programs (one per CHAIN allow rules), so a request
        makes one call into CEL whatever the number of rules: the per-call cost dominates
        (docs/decisions/0011-cel-library.md). Each answers -1 (a deny rule is true), the index of the
        first true allow rule, -2 (none of its allow rules is true) or -3 (no allow list). A rule that
        fails at run time makes it an error (CEL's `false || error` is an error, and so is
        `error ? a : b`): that request is then decided rule by rule."""
        if not (self._deny or self._allow):
            return None
        deny = " || ".join(f"({rule.text})" for rule in self._deny) or "false"
        programs: list[Any] = []
        for start in range(0, max(len(self._allow), 1), CHAIN):
            chain = "-2" if self._allow else "-3"
            for index in reversed(range(start, min(start + CHAIN, len(self._allow)))):
                chain = f"({self._allow[index].text}) ? {index} : ({chain})"
            try:
                programs.append(self._env.compile(f"({deny}) ? -1 : ({chain})" if start == 0 else chain))
            except Exception:  # e.g. deeper than the parser takes: rule by rule
                return None
        return programs

    def _compile(self, text: str, section: str, *, boolean: bool = False) -> _Rule:
        try:
            program = self._env.compile(text)
        except Exception as exc:
            raise ConfigError(f"policy: {section} rule {text!r} does not compile: {exc}") from None
        kind = program.return_type()
        if boolean and kind not in (self._cel.Type.BOOL, self._cel.Type.DYN):
            raise ConfigError(f"policy: {section} rule {text!r} is not a boolean (it is {kind.name()})")
        return _Rule(program, text)

    @property
    def filters(self) -> bool:
        """Whether some rule can refuse a call (then lists are filtered)."""
        return bool(self._deny or self._allow)

    def activation(self, variables: Mapping[str, Any]) -> Any:
        return self._env.Activation(data=variables)

    def decide(self, variables: Mapping[str, Any], *, with_limits: bool = True) -> Decision:
        activation = self._env.Activation(data=variables)
        error = self._cel.Type.ERROR
        result, chosen = self._rules(activation, error)
        if result == "deny":
            return Decision("deny", chosen)
        if not with_limits or not self._limits:
            return Decision("allow", chosen)
        applying: list[tuple[LimitRule, str]] = []
        for limit, when, key in self._limits:
            ok, value = when.value(activation, error)
            if ok and value is not True:
                continue
            key_ok, key_value = key.value(activation, error)
            applying.append((limit, str(key_value) if key_ok else ERROR_KEY))
        return Decision("allow", chosen, tuple(applying))

    def decide_as(self, key: Hashable, variables: Mapping[str, Any], *, with_limits: bool = True) -> Decision:
        """`decide`, kept under `key` (what fixes the variables the rules read: see `memoizable`)."""
        found = self._memo.get((key, with_limits))
        if found is None:
            found = self.decide(variables, with_limits=with_limits)
            if len(self._memo) >= MEMO:
                self._memo.clear()  # bounded: a burst of new keys costs a refill, never memory
            self._memo[(key, with_limits)] = found
        return found

    def _rules(self, activation: Any, error: Any) -> tuple[str, str]:
        """(allow or deny, the deciding rule's text or "default") by the deny and allow rules."""
        for program in self._whole or ():
            found = program.eval(activation)
            if found.type() == error:
                break  # some rule failed: rule by rule, below
            index = found.value()
            if index >= 0:
                return "allow", self._allow[index].text
            if index == -3:
                return "allow", "default"
            if index == -1:
                break  # a deny rule is true: which one is found below
        else:
            if self._whole:
                return "deny", "default"  # every chunk answered -2
        for rule in self._deny:
            ok, value = rule.value(activation, error)
            if not ok or value is True:  # a failing deny rule refuses
                return "deny", rule.text
        if not self._allow:
            return "allow", "default"
        for rule in self._allow:
            ok, value = rule.value(activation, error)
            if ok and value is True:  # a failing allow rule does not allow
                return "allow", rule.text
        return "deny", "default"
