"""`mcp-gateway`: parse flags into Settings and serve with uvicorn (uvloop + httptools).

Every flag is also an env var `MCPGW_<NAME>`; a flag given on the command line wins.
Signals are handled in one place: SIGTERM/SIGINT start the drain, then uvicorn shuts down
gracefully within `--drain-timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from gateway import __version__, inspection, logs
from gateway.config import Settings
from gateway.config.groups import GROUPS, group_of
from gateway.config.settings import is_list_setting
from gateway.config.specs import load_config_file
from gateway.errors import ConfigError, GatewayError
from gateway.http.app import create_app
from gateway.http.connections import protocol_factory
from gateway.http.gateway import Gateway

# `--workers N`: the parent's flags, for each worker to parse again (same env, same config file)
WORKER_ARGV = "MCPGW_WORKER_ARGV"

# flags that may be given many times: every list setting (derived, so a new one cannot be forgotten)
REPEATABLE = frozenset(name for name in Settings.model_fields if is_list_setting(Settings, name))
# extra spellings of a flag: the singular reads better when repeated
ALIASES = {"virtual_servers": ("--virtual-server",)}


DESCRIPTION = (
    "A horizontally scalable reverse proxy for MCP Streamable HTTP. Every flag is also an environment "
    "variable MCPGW_<NAME> and a key of the --config file: a flag beats the environment, which beats the file."
)
USAGE = "%(prog)s [--upstream NAME=URL[,URL...]]... [--redis-url URL] [options]\n       %(prog)s inspect --help"


def build_parser(
    prog: str = "mcp-gateway", description: str | None = DESCRIPTION, usage: str | None = USAGE
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, usage=usage)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups = {title: parser.add_argument_group(title) for title in GROUPS}
    for name, field in Settings.model_fields.items():
        group = groups[group_of(name)]
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (env MCPGW_{name.upper()})"
        if name in REPEATABLE:
            group.add_argument(flag, *ALIASES.get(name, ()), action="append", dest=name, default=None, help=help_text)
        elif field.annotation is bool:  # a bare `--redis-cluster` means true; `--flag false` also works
            group.add_argument(flag, dest=name, default=None, nargs="?", const="true", help=help_text)
        else:
            group.add_argument(flag, dest=name, default=None, help=help_text)
    return parser


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Flags beat env vars (MCPGW_*), which beat the config file, which beats defaults."""
    return settings_from(build_parser().parse_args(argv))


def settings_from(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
    path = given.get("config") or os.environ.get("MCPGW_CONFIG")
    if path:
        from_file = load_config_file(path)
        unknown = set(from_file) - set(Settings.model_fields)
        if unknown:
            raise ConfigError(f"config: {path}: unknown setting(s) {sorted(unknown)}")
        for name, value in from_file.items():
            if name not in given and f"MCPGW_{name.upper()}" not in os.environ:
                given[name] = value
    return Settings(**given)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, starting the gateway's drain the moment a stop signal arrives.

    Signals are handled here and only here: SIGTERM/SIGINT start the drain, uvicorn then shuts
    down gracefully, and the process exits 0 (uvicorn would re-raise the signal afterwards).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        start_drain(self.config.loaded_app)
        super().handle_exit(sig, frame)


def start_drain(app: Any) -> None:
    """Start the gateway's drain, through whatever wraps the app (uvicorn's proxy-headers layer)."""
    while hasattr(app, "app") and not hasattr(app, "state"):
        app = app.app
    gateway: Gateway | None = getattr(getattr(app, "state", None), "gateway", None)
    if gateway is not None:
        gateway.start_drain()


def drain_on_stop_signals(app: Any) -> None:
    """In a `--workers` worker (uvicorn's own Server, whose stop-signal handlers are installed by
    the time the app factory runs): start the drain first, then let uvicorn's handler run."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            start_drain(app)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


INSPECT_HELP = """Read-only view of the store: replicas alive, sessions, streams, tasks, or one session in detail.
Takes the server's own flags, env vars and config file (only the store ones matter: --redis-url,
--key-prefix, --config). Reads with SCAN in small steps; never blocks Redis."""


def _take_dashed_session_id(argv: list[str], options: frozenset[str]) -> tuple[list[str], str | None]:
    """Session ids are URL-safe base64 and one in 64 starts with '-', which argparse takes for a
    flag: the word after `session` is the id unless it is one of the flags (or `--flag=value`)."""
    if "session" not in argv:
        return argv, None
    at = argv.index("session") + 1
    word = argv[at] if at < len(argv) else ""
    if not word.startswith("-") or word == "--" or word.split("=", 1)[0] in options:
        return argv, None
    return argv[:at] + argv[at + 1 :], word


def inspect_main(argv: Sequence[str]) -> int:
    """`mcp-gateway inspect [all|replicas|sessions|streams|tasks|session ID] [--json] [server flags]`."""
    parser = build_parser(
        prog="mcp-gateway inspect",
        description=INSPECT_HELP,
        usage="%(prog)s [all|replicas|sessions|streams|tasks|session ID] [--json] [store options]",
    )
    views = ["all", "replicas", "sessions", "streams", "tasks", "session"]
    parser.add_argument("view", nargs="?", default="all", choices=views)
    parser.add_argument("session_id", nargs="?", help="for `session`: a session id or its first characters")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    argv, dashed_id = _take_dashed_session_id(list(argv), frozenset(parser._option_string_actions))
    args = parser.parse_args(argv)
    if dashed_id is not None:
        args.session_id = dashed_id
    if args.view == "session" and not args.session_id:
        parser.error("`session` needs a session id (or its first characters)")
    try:
        settings = settings_from(args)
    except (ValidationError, ConfigError) as exc:
        print(f"mcp-gateway inspect: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print("mcp-gateway inspect: needs --redis-url (the embedded store lives inside the server)", file=sys.stderr)
        return 2
    try:
        print(asyncio.run(inspection.report(settings, args.view, args.session_id, as_json=args.json)))
    except GatewayError as exc:
        print(f"mcp-gateway inspect: {exc.message}", file=sys.stderr)
        return 1
    return 0


def tune_gc(young_threshold: int) -> None:
    """Once the app has started: freeze what start-up built (modules, clients, the app) out of
    every collection, and collect young objects less often. Each full collection otherwise
    walked the whole start-up heap, several times a second under load (docs/decisions/0010)."""
    if young_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["inspect"]:
        raise SystemExit(inspect_main(args[1:]))
    if args[:1] == ["audit"]:
        from gateway.audit import command  # the reader's own subcommand, kept out of the server's imports

        raise SystemExit(command.main(args[1:], build_parser, settings_from))
    try:
        settings = load_settings(args)
        app = create_app(settings, on_started=lambda: tune_gc(settings.gc_young_threshold))
    except (ValidationError, ConfigError) as exc:
        print(f"mcp-gateway: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    if settings.workers > 1 and settings.embedded_store:
        print(
            "mcp-gateway: --workers > 1 needs --redis-url or --redis-sentinel (the embedded store is per process)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    protocol = protocol_factory(settings)  # the connection rules of http/framing.py
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http=protocol,
        server_header=False,  # no `server: uvicorn`: what runs behind the port is nobody's business
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
        access_log=False,
        workers=settings.workers,
        **forwarded_options(settings),
    )
    if settings.workers > 1:
        os.environ[WORKER_ARGV] = json.dumps(args)  # spawned workers inherit it
        uvicorn.run(
            "gateway.cli:app_from_env",
            factory=True,
            http=protocol,
            server_header=False,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
            log_level=settings.log_level.lower(),
            access_log=False,
            **forwarded_options(settings),
        )
        return
    GatewayServer(config).run()


def forwarded_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy-headers layer, by `--trust-forwarded-for` alone. On: the peer is the proxy
    in front (the operator says so), whose `X-Forwarded-For` and `X-Forwarded-Proto` give the
    client's address and scheme. Off (the default): neither header is read from anyone; uvicorn on
    its own would trust them from 127.0.0.1, so a local proxy's headers chose the client key of the
    per-client limits whatever the flag said, and the layer costs every request a coroutine."""
    if settings.trust_forwarded_for:
        return {"proxy_headers": True, "forwarded_allow_ips": "*"}
    return {"proxy_headers": False}


def app_from_env() -> Any:
    """Factory for `--workers N`: each worker parses the parent's flags again, so flags, env vars
    and the config file resolve exactly as in the parent."""
    settings = load_settings(json.loads(os.environ.get(WORKER_ARGV, "[]")))
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings, on_started=lambda: tune_gc(settings.gc_young_threshold))
    drain_on_stop_signals(app)
    return app
