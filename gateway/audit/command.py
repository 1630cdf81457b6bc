"""`mcp-gateway audit [--follow] [--json] [--principal P] [--since T] [server flags]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from gateway.audit import reader
from gateway.config import Settings
from gateway.errors import ConfigError, GatewayError
from gateway.store.client import connect
from gateway.store.keys import Keys

HELP = """Print the audit trail kept in Redis (`--audit redis`), oldest first: every decided request's record.
Takes the server's own flags, env vars and config file (only the store ones matter: --redis-url,
--key-prefix, --config)."""


def parser(build: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    found = build(prog="mcp-gateway audit", description=HELP)
    found.add_argument("--follow", action="store_true", help="keep printing new records as they are written")
    found.add_argument("--json", action="store_true", help="one JSON record a line (as stored)")
    found.add_argument("--principal", help="only this principal's records (`issuer|subject`, or the subject)")
    found.add_argument("--since", help="only records from then: 15m, 2h, 1d ago, an ISO 8601 time or Unix seconds")
    return found


def keeps(principal: str | None) -> Callable[[dict[str, Any]], bool]:
    if not principal:
        return lambda record: True
    return lambda record: (
        record.get("principal") == principal or str(record.get("principal", "")).endswith("|" + principal)
    )


async def show(settings: Settings, args: argparse.Namespace) -> None:
    redis = connect(
        settings.redis_url,
        max_connections=2,
        cluster=settings.redis_cluster,
        sentinels=settings.sentinels(),
        sentinel_master=settings.redis_sentinel_master,
        client_name="mcpgw:audit",
    )
    try:
        found = reader.records(
            redis,
            Keys(settings.key_prefix),
            since=reader.since_ms(args.since),
            follow=args.follow,
            keep=keeps(args.principal),
        )
        async for record in found:
            print(reader.line(record, args.json), flush=True)
    finally:
        await redis.aclose()


def main(argv: Sequence[str], build: Callable[..., argparse.ArgumentParser], settings_from: Any) -> int:
    args = parser(build).parse_args(list(argv))
    try:
        settings: Settings = settings_from(args)
        reader.since_ms(args.since)  # a bad --since fails before connecting
    except (ValidationError, ConfigError) as exc:
        print(f"mcp-gateway audit: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url and not settings.sentinels():
        print("mcp-gateway audit: needs --redis-url (the audit stream lives in Redis)", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(show(settings, args))
    except GatewayError as exc:
        print(f"mcp-gateway audit: {exc.message}", file=sys.stderr)
        return 1
    return 0
