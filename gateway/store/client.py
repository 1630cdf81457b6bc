"""The Redis connection: created once in the app lifespan, passed to whoever needs it.

Three topologies, one client API (commands, pipelines, `register_script`, `.pubsub()` with
`ssubscribe`): one Redis node, a Redis Cluster (`RedisCluster` discovers every node from one
seed and follows MOVED redirections and failovers) or a primary watched by Sentinels (a
`master_for` client asks the Sentinels for the primary on every new connection, so it follows a
promotion without a restart). Every key of a session shares one hash tag, so all of them work.

With no Redis named the gateway runs on an embedded in-process store (fakeredis, with Lua),
which behaves like Redis for one process only; `connect` says so loudly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Literal, cast

import fakeredis
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.maint_notifications import MaintNotificationsConfig

from gateway import retry
from gateway.errors import StoreBusy, StoreError, opaque
from gateway.store import lane as lanes
from gateway.store.lane import Lane, LaneUnavailable, Node

log = logging.getLogger("gateway.store.client")

# The store code is typed against the single-node client; `RedisCluster` and the Sentinel master
# client offer the same command, pipeline, script and pub/sub API for single-slot work.
Redis = aioredis.Redis

# What redis-py's BlockingConnectionPool raises when no connection freed up within its timeout.
POOL_EXHAUSTED = "No connection available"
SOCKET_CONNECT_TIMEOUT = 2.0  # a dead node must fail fast so a failover is noticed within seconds


class _LeanBlockingPool(BlockingConnectionPool):
    """redis-py's blocking pool with a fast path for the common case: a connected idle connection
    and nobody waiting. redis-py 8's `get_connection`/`release` take the pool's condition, start a
    timeout, poll the socket for stray bytes and record observability counters on every command
    (a tenth of a replica's CPU per JSON call: docs/decisions/0010). The fast path skips them:
    a pooled connection is clean (redis-py disconnects one that failed or was cancelled mid-command,
    and such a one is not `is_connected`), and with nobody waiting there is nobody to notify. Every
    other case (a new or reconnecting connection, an exhausted pool, waiters) takes redis-py's path,
    so the bound, the wait and its timeout are unchanged; waiters are never overtaken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting = 0

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        available = self._available_connections
        if available and not self._waiting:
            connection = available[-1]
            if connection.is_connected and not connection.should_reconnect():  # type: ignore[no-untyped-call]
                available.pop()
                self._in_use_connections.add(connection)
                return connection
        self._waiting += 1
        try:
            return cast(AbstractConnection, await super().get_connection())  # type: ignore[no-untyped-call]
        finally:
            self._waiting -= 1

    async def release(self, connection: AbstractConnection) -> None:
        reconnect = connection.should_reconnect()  # type: ignore[no-untyped-call]
        if self._waiting or reconnect or connection not in self._in_use_connections:
            await super().release(connection)
            return
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


class LanedRedis(aioredis.Redis):
    """redis-py's client, carrying the replica's lane (`store/lane.py`) for the scripts."""

    lane: Lane | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.lane is not None:
            await self.lane.aclose()
        await super().aclose(close_connection_pool)


class LanedCluster(RedisCluster):
    lane: Lane | None = None

    async def aclose(self) -> None:
        if self.lane is not None:
            await self.lane.aclose()
        await super().aclose()


class Script:
    """A Lua script run by EVALSHA, loaded again on a NOSCRIPT reply (a restarted or failed-over
    Redis). What `register_script` does, without its per-call pipeline check (a `typing.Protocol`
    isinstance, ~2 % of a JSON call's CPU). It runs on the client's lane when it has one, and
    through redis-py when the lane gives the call back."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._lane: Lane | None = getattr(redis, "lane", None)
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, *, keys: Sequence[str], args: Sequence[str | bytes | int | float] = ()) -> Any:
        if self._lane is not None and keys:
            command = ("EVALSHA", self._sha, len(keys), *keys, *args)  # the sha is the source's: loading keeps it
            try:
                return await self._lane.call(keys[0], command)
            except LaneUnavailable:
                pass  # not run: redis-py runs it (redirection, failover, its retry policy)
            except redis_exceptions.NoScriptError:
                await self._load()
                with contextlib.suppress(LaneUnavailable):
                    return await self._lane.call(keys[0], command)
        try:
            return await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        except redis_exceptions.NoScriptError:
            await self._load()
            return await self._redis.evalsha(self._sha, len(keys), *keys, *args)

    def cast(self, *, keys: Sequence[str], args: Sequence[str | bytes | int | float] = ()) -> bool:
        """Run it on the lane without waiting for the outcome (`Lane.cast`); False when the lane
        could not take it (none, or not connected): then nothing was sent. By EVAL, source and
        all: no caller sees a NOSCRIPT reply, so a cast must not depend on Redis still holding
        the script (a restart, a failover)."""
        if self._lane is None or not keys:
            return False
        return self._lane.cast(keys[0], ("EVAL", self._source, len(keys), *keys, *args))

    async def _load(self) -> None:
        self._sha = await self._redis.script_load(self._source)  # every primary, on a Cluster


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (asks the Sentinels for the primary's address) with the blocking
    pool's bound: a burst beyond `max_connections` waits instead of failing."""


def connect(
    redis_url: str | None,
    *,
    max_connections: int = 64,
    pool_timeout: float = 5.0,
    cluster: bool = False,
    sentinels: tuple[tuple[str, int], ...] = (),
    sentinel_master: str = "mymaster",
    client_name: str | None = None,
    lane: bool = True,
) -> Redis:
    """The client for the configured topology (validated by `config.check_store`); `client_name`
    names every connection (`CLIENT LIST` shows which replica holds which). With `lane`, scripts
    run on one pipelined connection per node (`store/lane.py`), counted in `max_connections`."""
    common: dict[str, Any] = {
        "retry": retry.redis_client(),
        "health_check_interval": 30,
        "socket_keepalive": True,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "client_name": client_name,
        # Open-source Redis has no maintenance notifications (a Redis Enterprise/Cloud feature): skip
        # redis-py's handshake on every new connection, a reconnect path that failed mid-failover.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if sentinels:
        return _sentinel(
            redis_url or "redis://", sentinels, sentinel_master, max_connections, pool_timeout, common, lane
        )
    if redis_url and cluster:
        laned = lane and _laneable(redis_url)
        # Per node: at most `max_connections` (RedisCluster has no blocking pool; beyond the
        # bound a command fails at once, which the caller sees as a 503 StoreError).
        nodes = cast(
            LanedCluster, LanedCluster.from_url(redis_url, max_connections=_pooled(max_connections, laned), **common)
        )
        if laned:
            nodes.lane = _cluster_lane(nodes, dict(parse_url(redis_url)), client_name)
        return cast(Redis, nodes)
    if redis_url:
        # A blocking pool: a burst beyond `max_connections` waits for a free connection (up to
        # `pool_timeout`, then StoreError) instead of failing at once with "Too many connections".
        laned = lane and _laneable(redis_url)
        pool = _LeanBlockingPool.from_url(
            redis_url, max_connections=_pooled(max_connections, laned), timeout=pool_timeout, **common
        )
        client = cast(LanedRedis, LanedRedis.from_pool(pool))  # the client owns (and closes) its pool
        if laned:
            kwargs = dict(parse_url(redis_url))
            address = (str(kwargs.get("host", "localhost")), int(str(kwargs.get("port", 6379))))
            client.lane = lanes.single(_node(_fixed(address), kwargs, client_name))
        return client
    log.warning(
        "no --redis-url given: using the EMBEDDED in-process store; sessions and streams live in "
        "this process only, so run exactly one replica (set MCPGW_REDIS_URL to scale out)"
    )
    embedded: Any = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return embedded  # type: ignore[no-any-return]


def _sentinel(
    redis_url: str,
    sentinels: tuple[tuple[str, int], ...],
    master: str,
    max_connections: int,
    pool_timeout: float,
    common: dict[str, Any],
    lane: bool,
) -> Redis:
    """Credentials, db and TLS of the primary come from the URL; its host and port from the
    Sentinels. The Sentinels themselves are asked without credentials, over TLS when the URL
    says `rediss://`."""
    url_kwargs: dict[str, Any] = dict(parse_url(redis_url))
    laned = lane and _laneable(redis_url)
    credentials = dict(url_kwargs)
    tls = url_kwargs.pop("connection_class", None) is SSLConnection
    url_kwargs.pop("host", None)
    url_kwargs.pop("port", None)
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "ssl": tls,
        "retry": retry.sentinel_query(),
    }
    manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
    client: Redis = manager.master_for(
        master,
        redis_class=LanedRedis,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=_pooled(max_connections, laned),
        timeout=pool_timeout,
        ssl=tls,
        **url_kwargs,
        **common,
    )
    if laned:

        async def primary() -> lanes.Address:
            host, port = await manager.discover_master(master)
            return str(host), int(port)

        cast(LanedRedis, client).lane = lanes.single(_node(primary, credentials, common["client_name"]))
    return client


def _laneable(redis_url: str) -> bool:
    """The lane speaks plain TCP: TLS (`rediss://`) and unix sockets stay on redis-py alone."""
    return redis_url.startswith("redis://")


def _pooled(max_connections: int, laned: bool) -> int:
    return max(1, max_connections - 1) if laned else max_connections  # the lane is one of them


def _fixed(address: lanes.Address) -> lanes.Resolve:
    async def resolve() -> lanes.Address:
        return address

    return resolve


def _node(resolve: lanes.Resolve, url_kwargs: dict[str, Any], client_name: str | None) -> Node:
    handshake: list[list[str | int]] = [["PING"]]
    if url_kwargs.get("password"):
        user = [str(url_kwargs["username"])] if url_kwargs.get("username") else []
        handshake.append(["AUTH", *user, str(url_kwargs["password"])])
    if int(url_kwargs.get("db") or 0):
        handshake.append(["SELECT", int(url_kwargs["db"])])
    if client_name:
        handshake.append(["CLIENT", "SETNAME", client_name])
    return Node(resolve, handshake, connect_timeout=SOCKET_CONNECT_TIMEOUT, timeout=lanes.REPLY_TIMEOUT)


def _cluster_lane(cluster: RedisCluster, url_kwargs: dict[str, Any], client_name: str | None) -> Lane:
    def locate(key: str) -> lanes.Address:
        primary = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
        return str(primary.host), int(primary.port)

    return lanes.per_node(locate, lambda address: _node(_fixed(address), url_kwargs, client_name))


async def ping(redis: Redis) -> None:
    """Readiness: every primary answers (on a Cluster, one per slot range: a primary that is
    down means a share of the sessions cannot be served until its replica is promoted)."""
    if isinstance(redis, RedisCluster):
        await redis.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await redis.ping()


async def pubsub(redis: Redis) -> PubSub:
    """A pub/sub object that can SSUBSCRIBE on any topology. `RedisCluster` routes a shard
    channel by its slot, so its slot map must be loaded first (`initialize` is idempotent);
    the cluster pub/sub then holds one connection per node it subscribes on."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
    return redis.pubsub()


class _Translated:
    """Translate redis-py (and fakeredis) failures into the gateway's StoreError.

    `RedisClusterException` (e.g. a slot no node serves while a failover runs) does not derive
    from `RedisError`, so it is named too. A class, not a `@contextmanager` generator: a JSON
    call enters it three times, and the generator's machinery cost ~2 % of the call."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None:
            return False
        if isinstance(exc, redis_exceptions.ConnectionError):
            if POOL_EXHAUSTED in str(exc):
                raise opaque(StoreBusy, "session store busy", exc) from exc
            raise opaque(StoreError, "session store unavailable", f"{type(exc).__name__}: {exc}") from exc
        if isinstance(exc, redis_exceptions.RedisError | redis_exceptions.RedisClusterException):
            raise opaque(StoreError, "session store unavailable", f"{type(exc).__name__}: {exc}") from exc
        if isinstance(exc, OSError):
            raise opaque(StoreError, "session store unavailable", exc) from exc
        if isinstance(exc, RuntimeError):
            # redis-py writing to a transport that closed under it while it reconnects (uvloop: "the
            # handler is closed"), seen on a Cluster pub/sub connection during a failover.
            raise opaque(StoreError, "session store unavailable", f"{type(exc).__name__}: {exc}") from exc
        return False


_TRANSLATED = _Translated()  # stateless: one instance serves every `with`


def translated() -> _Translated:
    """`with translated(): ...` turns a store failure into StoreError (see `_Translated`)."""
    return _TRANSLATED
