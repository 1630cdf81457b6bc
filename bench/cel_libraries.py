"""Compare CEL libraries for policy rules: compile and evaluation cost, correctness.

Run once per library, in an environment that has it installed (two of them
share the import name ``cel``):

    python -m bench.cel_libraries celpy|cel-rust|cel-expr|python-cel

It prints one JSON line: compile time of a 1/20/200-rule policy, the cost of
binding one request's variables and evaluating every rule of it (the worst case: no rule matches
until the last), and which of the issue's example rules gave the expected
answer. The figures are recorded in docs/decisions/0011-cel-library.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

ALLOW_LISTS = 'mcp.method in ["initialize", "ping", "tools/list", "prompts/list", "resources/list"]'
EXAMPLES: list[tuple[str, dict[str, Any], bool]] = [
    ('mcp.tool.name == "delete_all" && !("admin" in jwt.roles)', {"tool": "delete_all", "roles": ["user"]}, True),
    ('mcp.tool.name == "delete_all" && !("admin" in jwt.roles)', {"tool": "delete_all", "roles": ["admin"]}, False),
    (ALLOW_LISTS, {"method": "tools/list"}, True),
    (ALLOW_LISTS, {"method": "tools/call"}, False),
    ('jwt.sub == "alice"', {"sub": "alice"}, True),
    ('jwt.sub == "alice"', {"sub": "bob"}, False),
    ('mcp.tool.name.startsWith("read_") && pool == "files"', {"tool": "read_file", "pool": "files"}, True),
    ('mcp.tool.name.startsWith("read_") && pool == "files"', {"tool": "read_file", "pool": "default"}, False),
    ('mcp.tool.name.startsWith("read_") && pool == "files"', {"tool": "", "pool": "files"}, False),
    ('mcp.arguments.size() > 1 && request.headers["x-team"] == "red"', {"args": {"a": 1, "b": 2}, "team": "red"}, True),
    ('client.ip.startsWith("10.") || mcp.resource.uri.startsWith("file:///pub/")', {"uri": "file:///pub/x"}, True),
]


def context(over: dict[str, Any]) -> dict[str, Any]:
    """One request's variables, every one defined (the gateway's contract)."""
    return {
        "jwt": {"sub": over.get("sub", "carol"), "roles": over.get("roles", []), "iss": "https://issuer"},
        "client": {"ip": "127.0.0.1"},
        "pool": over.get("pool", "default"),
        "mcp": {
            "method": over.get("method", "tools/call"),
            "tool": {"name": over.get("tool", "search")},
            "prompt": {"name": ""},
            "resource": {"uri": over.get("uri", "")},
            "arguments": over.get("args", {"q": "x"}),
        },
        "request": {"headers": {"x-team": over.get("team", "blue"), "user-agent": "bench"}},
    }


def rules(n: int) -> list[str]:
    """n distinct rules of the issue's shapes, none true for the measured request."""
    shapes = [
        'mcp.tool.name == "tool_{i}" && !("admin" in jwt.roles)',
        'jwt.sub == "user_{i}"',
        'mcp.tool.name.startsWith("ns{i}_") && pool == "files"',
        'mcp.method == "m{i}" && request.headers["x-team"] == "t{i}"',
    ]
    return [shapes[i % len(shapes)].format(i=i) for i in range(n)]


Compiled = Callable[[Any], Any]
Bind = Callable[[dict[str, Any]], Any]


def engine(name: str) -> tuple[Callable[[str], Compiled], Bind, str]:
    """(compile a rule, bind one request's variables once, label)."""
    if name == "celpy":
        import celpy  # type: ignore[import-not-found, unused-ignore]

        env = celpy.Environment()

        def compile_celpy(src: str) -> Compiled:
            program = env.program(env.compile(src))
            return lambda act: bool(program.evaluate(act))

        return compile_celpy, celpy.json_to_cel, "cel-python " + _version("cel-python")
    if name == "cel-rust":
        import cel  # type: ignore[import-not-found, unused-ignore]

        def compile_rust(src: str) -> Compiled:
            program = cel.compile(src)
            return lambda act: program.execute(act)

        return (
            compile_rust,
            lambda ctx: cel.Context(variables=ctx),
            "common-expression-language " + _version("common-expression-language"),
        )
    if name == "python-cel":
        import cel

        def compile_pycel(src: str) -> Compiled:
            program = cel.Program(src)
            return lambda act: program.execute(act)

        return compile_pycel, lambda ctx: cel.Context(variables=ctx), "python-cel " + _version("python-cel")
    if name == "cel-expr":
        from cel_expr_python import cel as gcel  # type: ignore[import-untyped, unused-ignore]

        dyn = gcel.Type.Map(gcel.Type.STRING, gcel.Type.DYN)
        env = gcel.NewEnv(variables={v: dyn for v in ("jwt", "client", "mcp", "request")} | {"pool": gcel.Type.STRING})

        def compile_google(src: str) -> Compiled:
            expr = env.compile(src)
            return lambda act: expr.eval(act).value()

        return compile_google, lambda ctx: env.Activation(data=ctx), "cel-expr-python " + _version("cel-expr-python")
    raise SystemExit(f"unknown library {name}")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def per_call(fn: Callable[[], object], budget: float = 1.0) -> float:
    """Seconds per call, CPU time, over about `budget` seconds."""
    n = 1
    while True:
        start = time.process_time()
        for _ in range(n):
            fn()
        spent = time.process_time() - start
        if spent >= budget:
            return spent / n
        n *= 2


def main(name: str) -> None:
    compile_one, bind, label = engine(name)
    result: dict[str, Any] = {"library": label}
    correct = 0
    for src, over, want in EXAMPLES:
        try:
            got = compile_one(src)(bind(context(over)))
        except Exception as exc:
            got = f"error: {type(exc).__name__}"
        correct += got is want or got == want
    result["examples_correct"] = f"{correct}/{len(EXAMPLES)}"
    ctx = context({})
    for n in (1, 20, 200):
        sources = rules(n)

        def compile_all(s: list[str] = sources) -> list[Compiled]:
            return [compile_one(r) for r in s]

        result[f"compile_{n}_ms"] = round(per_call(compile_all, 0.5) * 1e3, 3)
        programs = [compile_one(r) for r in sources]
        # One request: its variables bound once, then every rule evaluated.

        def one_request(p: list[Compiled] = programs) -> list[Any]:
            return [prog(act) for act in [bind(ctx)] for prog in p]

        result[f"eval_{n}_us"] = round(per_call(one_request) * 1e6, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
