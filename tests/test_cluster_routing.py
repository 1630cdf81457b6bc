"""Every Redis command the gateway sends, with the node redis-py's cluster client sends it to, and
why that node answers right (issue 30, item 2). Socket-free: the source is scanned for commands,
and redis-py's own routing tables (its policy resolver and `COMMAND_FLAGS`) are asked how they
route each one. A command that appears in the code without an entry here fails the test, as does
an entry whose route redis-py changed, or a command that is not routed by key used outside the
module that sends it to the right nodes.

Routes: `key` (the primary owning the key's slot: right for any single-slot command), `default`
(one fixed node: wrong for any question about data or subscribers on other nodes), `primaries`
(every primary, answers merged), `channel` (pub/sub: one connection per node owning a channel's
slot), `connection` (sent on a connection the gateway opened to one node itself), `script` (a Lua
command: runs on the node of the script's KEYS, which share one hash slot).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.commands.policies import AsyncStaticPolicyResolver

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
RECEIVER = re.compile(r"(^|\.)(_?redis|pipe|_?pubsub)$")  # how the code names its Redis clients
NOT_COMMANDS = {"aclose", "pipeline", "pubsub", "initialize", "get_message"}  # client methods, no command
LUA = re.compile(r"redis\.p?call\(\s*['\"]([A-Za-z]+)['\"]")
# a command tuple or list the store sends itself: ("EVALSHA", ...), ["CLIENT", "SETNAME", ...]
RAW = re.compile(r"(?<![\w.])[(\[]\s*\"([A-Z]+)\"\s*(?:,\s*\"([A-Z]+)\")?")
RAW_SUBCOMMANDS = {"CLIENT"}


@dataclass(frozen=True)
class Route:
    command: str
    redis_py: str  # how redis-py's cluster client routes it: key, default, primaries (or channel, ...)
    why: str  # why the answer is right on a Cluster
    only_in: tuple[str, ...] = ()  # for a route that is not by key: the modules allowed to send it


KEYED = "one key, or keys sharing one hash tag"
# Python calls on a Redis client, pipeline or pub/sub object: method name -> route.
CALLS: dict[str, Route] = {
    "delete": Route("DEL", "key", KEYED),
    "exists": Route("EXISTS", "key", "one key per command (redis-py splits EXISTS by slot)"),
    "expire": Route("EXPIRE", "key", KEYED),
    "get": Route("GET", "key", KEYED),
    "hdel": Route("HDEL", "key", KEYED),
    "hget": Route("HGET", "key", KEYED),
    "hgetall": Route("HGETALL", "key", KEYED),
    "hkeys": Route("HKEYS", "key", KEYED),
    "hset": Route("HSET", "key", KEYED),
    "object": Route("OBJECT IDLETIME", "key", KEYED),
    "pexpire": Route("PEXPIRE", "key", KEYED),
    "pttl": Route("PTTL", "key", KEYED),
    "set": Route("SET", "key", KEYED),
    "spublish": Route("SPUBLISH", "key", "a shard channel routes by its slot, like a key"),
    "xadd": Route("XADD", "key", KEYED),
    "xlen": Route("XLEN", "key", KEYED),
    "xrange": Route("XRANGE", "key", KEYED),
    "xrevrange": Route("XREVRANGE", "key", KEYED),
    "zrem": Route("ZREM", "key", KEYED),
    # era bridging: a bridged client's answers, cancellations and subscriptions (one session's hash tag),
    # the held upstream sessions and open rounds (one key each)
    "lpop": Route("LPOP", "key", KEYED),
    "rpush": Route("RPUSH", "key", KEYED),
    "sadd": Route("SADD", "key", KEYED),
    "sismember": Route("SISMEMBER", "key", KEYED),
    "smembers": Route("SMEMBERS", "key", KEYED),
    "srem": Route("SREM", "key", KEYED),
    "zadd": Route("ZADD", "key", KEYED),
    "zcard": Route("ZCARD", "key", KEYED),
    "zrange": Route("ZRANGE", "key", KEYED),
    "zrangebyscore": Route("ZRANGEBYSCORE", "key", KEYED),
    # `mcp-gateway audit --follow`: one stream key
    "xread": Route("XREAD", "key", "one stream key per call (the audit trail)"),
    "evalsha": Route("EVALSHA", "key", "a script's KEYS share one hash tag: the node owning that slot"),
    "ssubscribe": Route("SSUBSCRIBE", "channel", "ClusterPubSub subscribes on the node owning each channel"),
    "sunsubscribe": Route("SUNSUBSCRIBE", "channel", "ClusterPubSub unsubscribes where it subscribed"),
    "ping": Route(
        "PING",
        "default",
        "readiness passes target_nodes=PRIMARIES: every primary must answer",
        only_in=("store/client.py",),
    ),
    "scan_iter": Route(
        "SCAN",
        "primaries",
        "RedisCluster.scan_iter keeps one cursor per primary and walks each to its end",
        only_in=("inspection.py",),
    ),
    "script_load": Route(
        "SCRIPT LOAD",
        "primaries",
        "loaded on every primary (redis-py keeps one answer: every primary returns the same sha)",
        only_in=("store/client.py",),
    ),
    "pubsub_shardnumsub": Route(
        "PUBSUB SHARDNUMSUB",
        "default",
        "store.nodes asks each primary about the channels whose slots it owns (target_nodes)",
        only_in=("store/nodes.py",),
    ),
}
# Commands inside Lua scripts: on the node of the script's KEYS (EVALSHA/EVAL above).
SCRIPTED = {
    "DEL", "EXISTS", "GET", "HDEL", "HEXISTS", "HGET", "HGETALL", "HINCRBY", "HKEYS", "HMGET", "HSET", "HSETNX",
    "PEXPIRE", "PTTL", "SET", "SPUBLISH", "TIME", "XADD", "ZADD", "ZCARD", "ZREMRANGEBYSCORE", "ZSCORE",
}  # fmt: skip
# Commands the store's own connections send (the scripts' lane: one connection per node).
RAW_COMMANDS: dict[str, Route] = {
    "EVALSHA": Route("EVALSHA", "key", "the lane sends a script to the primary owning KEYS[0]'s slot"),
    "EVAL": Route("EVAL", "key", "the lane sends a script to the primary owning KEYS[0]'s slot"),
    "PING": Route("PING", "connection", "handshake of one lane connection"),
    "AUTH": Route("AUTH", "connection", "handshake of one lane connection"),
    "SELECT": Route("SELECT", "connection", "handshake of one lane connection (no Cluster: db 0 only)"),
    "CLIENT SETNAME": Route("CLIENT SETNAME", "connection", "handshake of one lane connection"),
    "CLIENT REPLY": Route("CLIENT REPLY", "connection", "per connection: the lane's fire-and-forget casts"),
}


def sources() -> dict[str, str]:
    return {str(p.relative_to(GATEWAY)): p.read_text() for p in sorted(GATEWAY.rglob("*.py"))}


def client_calls() -> dict[str, set[str]]:
    """Method name -> the modules calling it on something the code names as a Redis client."""
    commands = {n for n in dir(aioredis.Redis) if not n.startswith("_")}
    commands |= {n for n in (*dir(ClusterPubSub), *dir(PubSub)) if not n.startswith("_")}
    found: dict[str, set[str]] = {}
    for module, text in sources().items():
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr in commands and RECEIVER.search(ast.unparse(node.func.value)):
                found.setdefault(node.func.attr, set()).add(module)
    return {name: modules for name, modules in found.items() if name not in NOT_COMMANDS}


async def redis_py_route(command: str) -> str:
    """What redis-py's cluster client does with `command` sent without target nodes."""
    policies = await AsyncStaticPolicyResolver().resolve(command.split()[0].lower())
    if policies is not None and policies.request_policy is not None:
        return {"default_keyed": "key", "multi_shard": "key"}.get(policies.request_policy.value, "other")
    flag = RedisCluster.COMMAND_FLAGS.get(command.upper())
    return {None: "key", RedisCluster.DEFAULT_NODE: "default", RedisCluster.PRIMARIES: "primaries"}.get(flag, "other")


def test_every_command_called_on_a_client_has_a_routing_decision() -> None:
    found = client_calls()
    missing = sorted(set(found) - set(CALLS))
    assert not missing, f"new Redis commands without a Cluster routing decision here: {missing}"
    stale = sorted(set(CALLS) - set(found))
    assert not stale, f"entries for commands the gateway no longer sends: {stale}"
    for name, route in CALLS.items():
        if route.redis_py in ("default", "primaries"):
            outside = found[name] - set(route.only_in)
            assert not outside, f"{route.command} ({route.redis_py}) is sent from {sorted(outside)}"


async def test_redis_py_routes_each_command_as_listed() -> None:
    for name, route in {**CALLS, **RAW_COMMANDS}.items():
        if route.redis_py in ("key", "default", "primaries"):
            assert await redis_py_route(route.command) == route.redis_py, (name, route)
    assert RedisCluster.scan_iter is not aioredis.Redis.scan_iter  # the per-primary cursor walk
    # shard channels subscribe per owning node, not on a default one
    assert "get_node_from_key" in ast.unparse(ast.parse(_source_of(ClusterPubSub.ssubscribe)))


def test_every_scripted_command_is_listed() -> None:
    found = {m.upper() for text in sources().values() for m in LUA.findall(text)}
    assert found == SCRIPTED, f"added: {sorted(found - SCRIPTED)}, gone: {sorted(SCRIPTED - found)}"


def test_every_command_the_store_connections_send_is_listed() -> None:
    found: set[str] = set()
    for module, text in sources().items():
        if module.startswith("store/"):
            for first, second in RAW.findall(text):
                found.add(f"{first} {second}" if first in RAW_SUBCOMMANDS else first)
    assert found == set(RAW_COMMANDS), f"added: {sorted(found - set(RAW_COMMANDS))}"


def _source_of(function: object) -> str:
    return textwrap.dedent(inspect.getsource(function))  # type: ignore[arg-type]
