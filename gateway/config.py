"""One frozen settings object, read from CLI flags or `MCPGW_*` environment variables.

The CLI (`gateway.cli`) maps each flag to a field of the same name, so `--session-ttl` and
`MCPGW_SESSION_TTL` set the same thing. Everything long-lived reads these values; nothing
else reads the environment.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.errors import ConfigError

DEFAULT_POOL = "default"


POLICIES = ("reinit", "expire")

# Health probe kinds (gateway/upstream/probes.py sends them; the README measures what each costs an upstream).
# `METHOD /path` (or a bare `/path`, GET) probes a health endpoint on the instance's origin instead.
PROBE_KINDS = ("tcp", "options", "ping", "discover", "get")
DEFAULT_PROBE = "tcp"
HTTP_METHODS = ("GET", "HEAD", "OPTIONS", "POST")


@dataclass(frozen=True)
class ProbeSpec:
    """How one pool's instances are probed: a kind from PROBE_KINDS, or `http` with a method and path."""

    kind: str
    interval: float
    method: str = ""
    path: str = ""

    def describe(self) -> str:
        return f"{self.method} {self.path}" if self.kind == "http" else self.kind


@dataclass(frozen=True)
class Pool:
    """A named pool of upstream MCP endpoint URLs (instances) and its instance-loss policy."""

    name: str
    instances: tuple[str, ...]
    on_instance_loss: str = "reinit"


def parse_upstream(spec: str, default_policy: str = "reinit") -> Pool:
    """Parse `NAME[@POLICY]=URL[,URL...]`; a bare `URL[,URL...]` names the default pool."""
    name, sep, urls = spec.partition("=")
    if not sep or "://" in name:
        name, urls = DEFAULT_POOL, spec
    name, _, policy = name.strip().partition("@")
    policy = policy or default_policy
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"upstream: bad pool name {name!r} in {spec!r}")
    if policy not in POLICIES:
        raise ConfigError(f"upstream: pool {name!r}: on_instance_loss must be one of {POLICIES}, not {policy!r}")
    instances = tuple(u.strip().rstrip("/") for u in urls.split(",") if u.strip())
    if not instances:
        raise ConfigError(f"upstream: pool {name!r} has no instance URL")
    for url in instances:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"upstream: {url!r} in pool {name!r} is not an http(s) URL")
    return Pool(name, instances, policy)


def parse_upstreams(specs: list[str], default_policy: str = "reinit") -> tuple[Pool, ...]:
    """Parse every `--upstream` value; `;` separates pools inside one value (handy in env vars)."""
    pools: dict[str, Pool] = {}
    for spec in specs:
        for part in spec.split(";"):
            if part.strip():
                pool = parse_upstream(part.strip(), default_policy)
                if pool.name in pools:
                    raise ConfigError(f"upstream: pool {pool.name!r} is defined twice")
                pools[pool.name] = pool
    return tuple(pools.values())


SENTINEL_PORT = 26379
STORE_SCHEMES = ("redis", "rediss")


def parse_sentinels(items: list[str]) -> tuple[tuple[str, int], ...]:
    """`HOST:PORT[,HOST:PORT...]` (repeatable, `[v6]:PORT` for IPv6) -> (host, port) pairs."""
    out: list[tuple[str, int]] = []
    for part in csv(items):
        host, sep, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"redis_sentinel: expected HOST:PORT (e.g. sentinel-1:{SENTINEL_PORT}), got {part!r}")
        out.append((host, int(port)))
    return tuple(out)


def check_store(url: str | None, cluster: bool, sentinels: tuple[tuple[str, int], ...]) -> None:
    """The store settings must name exactly one topology: one node, a Cluster, or Sentinels."""
    if cluster and sentinels:
        raise ConfigError("--redis-cluster and --redis-sentinel exclude each other: pick one topology")
    if cluster and not url:
        raise ConfigError("--redis-cluster needs --redis-url naming one seed node of the Cluster")
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in STORE_SCHEMES and not (parts.scheme == "unix" and not (cluster or sentinels)):
        raise ConfigError(f"redis_url: scheme must be redis:// or rediss:// (TLS), not {parts.scheme!r}")
    db = parts.path.strip("/")
    if cluster and db not in ("", "0"):
        raise ConfigError(f"redis_url: a Redis Cluster has only database 0, not /{db}")


def parse_probe(spec: str, base: ProbeSpec) -> tuple[str | None, ProbeSpec]:
    """Parse `[POOL=]PROBE[@SECONDS]` into (pool or None for every pool, spec); omitted parts come from `base`.

    PROBE is a kind (`tcp`, `options`, `ping`, `discover`, `get`), `METHOD /path`, a bare `/path` (GET),
    or empty (keep the kind, change the interval: `search=@10`).
    """
    pool: str | None = None
    head, sep, rest = spec.partition("=")
    if sep and head.strip() and head.strip().replace("-", "").replace("_", "").isalnum():
        pool, spec = head.strip(), rest
    probe, at, seconds = spec.strip().rpartition("@")
    if not at:
        probe, seconds = seconds, ""
    interval = base.interval
    if seconds:
        try:
            interval = float(seconds)
        except ValueError:
            raise ConfigError(f"health_probe: bad interval {seconds!r} in {spec!r}") from None
        if interval <= 0:
            raise ConfigError(f"health_probe: interval must be > 0 in {spec!r}")
    probe = probe.strip()
    if not probe:
        return pool, ProbeSpec(base.kind, interval, base.method, base.path)
    if probe.lower() in PROBE_KINDS:
        return pool, ProbeSpec(probe.lower(), interval)
    method, _, path = probe.rpartition(" ")
    method = method.strip().upper() or "GET"
    if not path.startswith("/") or method not in HTTP_METHODS:
        raise ConfigError(
            f"health_probe: {probe!r} is not one of {PROBE_KINDS}, `METHOD /path` ({'/'.join(HTTP_METHODS)}) or `/path`"
        )
    return pool, ProbeSpec("http", interval, method, path)


def resolve_probes(specs: list[str], pools: tuple[Pool, ...], interval: float) -> dict[str, ProbeSpec]:
    """Every pool's probe: the default, then entries without a pool (in order), then per-pool entries."""
    default = ProbeSpec(DEFAULT_PROBE, interval)
    per_pool: list[tuple[str, str]] = []
    for item in specs:
        for part in item.split(";"):
            if not part.strip():
                continue
            pool, spec = parse_probe(part, default)
            if pool is None:
                default = spec
            else:
                per_pool.append((pool, part))
    probes = {p.name: default for p in pools}
    for pool, part in per_pool:
        if pool not in probes:
            raise ConfigError(f"health_probe: {part!r} names no configured pool (pools: {sorted(probes)})")
        probes[pool] = parse_probe(part, probes[pool])[1]
    return probes


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or TOML file holding settings by field name (same schema as the flags).

    `upstream` may be a list of `NAME=URL,...` strings or a mapping
    `{NAME: {instances: [URL, ...], on_instance_loss: reinit|expire}}`; `task_tools` a list of
    `POOL=NAME,...` strings or a mapping `{POOL: [NAME[:required], ...]}`.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode()) if path.endswith(".toml") else yaml.safe_load(raw)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        kind = "TOML" if path.endswith(".toml") else "YAML"
        raise ConfigError(f"config: {path} is not valid {kind}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping of setting names")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    upstream = values.get("upstream")
    if isinstance(upstream, dict):
        values["upstream"] = [_pool_spec(name, body) for name, body in upstream.items()]
        probes = [p for name, body in upstream.items() if (p := _pool_probe(name, body))]
        if probes:
            given = values.get("health_probe") or []
            values["health_probe"] = [*([given] if isinstance(given, str) else given), *probes]
    task_tools = values.get("task_tools")
    if isinstance(task_tools, dict):
        values["task_tools"] = [_task_tools_spec(pool, names) for pool, names in task_tools.items()]
    return values


def _task_tools_spec(pool: str, names: Any) -> str:
    """`task_tools: {POOL: [NAME[:required], ...]}` in a config file -> the flag's `POOL=NAME,...`."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"config: task_tools.{pool} must be a list of tool names")
    return f"{pool}={','.join(names)}"


_POOL_FIELDS = {"instances", "on_instance_loss", "health_probe", "health_interval"}


def _pool_spec(name: str, body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise ConfigError(f"config: upstream.{name}.instances must be a list of URLs")
    unknown = set(body) - _POOL_FIELDS
    if unknown:
        raise ConfigError(f"config: upstream.{name}: unknown field(s) {sorted(unknown)}")
    policy = body.get("on_instance_loss")
    head = f"{name}@{policy}" if policy else name
    return f"{head}={','.join(str(u) for u in body['instances'])}"


def _pool_probe(name: str, body: dict[str, Any]) -> str | None:
    """A pool mapping's `health_probe`/`health_interval` as a `--health-probe POOL=PROBE@SECONDS` entry."""
    probe, interval = body.get("health_probe"), body.get("health_interval")
    if probe is None and interval is None:
        return None
    return f"{name}={probe or ''}" + (f"@{interval}" if interval is not None else "")


class Settings(BaseSettings):
    """Every knob of the gateway. Field names are the CLI flag names with `-` for `_`."""

    model_config = SettingsConfigDict(env_prefix="MCPGW_", frozen=True, extra="forbid")

    upstream: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Upstream pool `NAME=URL[,URL...]`; repeatable; `;` separates pools in one value.",
    )
    config: str | None = Field(None, description="YAML/TOML file with these settings (flags and env win).")
    instance_loss: Literal["reinit", "expire"] = Field(
        "reinit", description="Default policy when a session's instance is gone (per pool: NAME@POLICY=...)."
    )
    health_interval: float = Field(2.0, gt=0, description="Active upstream health probe interval, s.")
    health_probe: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Health probe `[POOL=]PROBE[@SECONDS]`: `tcp` (default), `options`, `ping`, `discover`, `get` "
        "or `METHOD /path`; without POOL for every pool; repeatable, `;` separates.",
    )
    health_timeout: float = Field(1.0, gt=0, description="Health probe timeout, s.")
    redis_url: str | None = Field(
        None,
        description="Redis URL `redis[s]://[user:password@]host:port[/db]`; unset (and no Sentinels) = the "
        "embedded in-process store.",
    )
    redis_max_connections: int = Field(
        64,
        ge=1,
        description="Redis command connections per replica (per node on a Cluster; no command blocks, so streams "
        "do not hold one; the tail adds one pub/sub connection per node); when all are busy, callers wait (up to "
        "5 s; on a Cluster they get a 503 at once).",
    )
    redis_cluster: bool = Field(
        False,
        description="`--redis-url` names one seed node of a Redis Cluster; the gateway discovers the others and "
        "follows slot moves and failovers.",
    )
    redis_sentinel: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Sentinels `HOST:PORT[,HOST:PORT...]` to ask for the primary (follows failovers); credentials, "
        "db and TLS (`rediss://`) come from `--redis-url`, whose host is then ignored.",
    )
    redis_sentinel_master: str = Field(
        "mymaster", min_length=1, description="Name of the primary the Sentinels monitor."
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes (needs a Redis URL if > 1).")
    key_prefix: str = Field("mcpgw", min_length=1, description="Prefix of every Redis key.")
    session_ttl: float = Field(3600.0, gt=0, description="Sliding idle TTL of a session, seconds.")
    stream_maxlen: int = Field(10_000, ge=10, description="Events kept per stream (approximate trim).")
    stream_idle_timeout: float = Field(
        300.0, gt=0, description="Stop pumping a stream after this long without an upstream event, s."
    )
    lease_ttl: float = Field(
        5.0,
        gt=0,
        description="Replica liveness TTL, s: a replica whose heartbeat (every TTL/5) stopped this long ago "
        "(paused, cut off) is dead and its streams are taken over; a killed replica is seen within 0.2 s "
        "through its presence channel, whatever this TTL.",
    )
    keepalive_interval: float = Field(15.0, gt=0, description="Keep-alive comment on idle SSE, s.")
    retry_ms: int = Field(1000, ge=0, description="`retry:` hint sent to 2025-11-25 clients, ms.")
    connect_timeout: float = Field(5.0, gt=0, description="Upstream connect timeout, s.")
    request_timeout: float = Field(60.0, gt=0, description="Upstream time to response headers, s.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest accepted POST body.")
    refusal_drain_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="After an early refusal (413, 401, ...), read and drop up to this much of the unread "
        "body so the client receives the answer instead of a reset.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Allowed `Origin` values besides localhost ones; `*` allows any.",
    )
    upstream_pool_size: int = Field(
        4096,
        ge=1,
        description="Max open connections per upstream host; each open SSE stream holds one, so size it above "
        "the streams you expect (requests beyond it wait for a free connection).",
    )
    replay_max_requests: int = Field(
        512, ge=1, description="Request ids remembered per session against replays (the newest are kept)."
    )
    replay_max_answer_bytes: int = Field(
        16 * 1024, ge=0, description="Largest JSON answer kept per request for its replays (larger: not kept)."
    )
    idempotency_ttl: float = Field(
        86400.0, gt=0, description="How long an Idempotency-Key and its stored response are kept, s."
    )
    idempotency_max_response_bytes: int = Field(
        1024 * 1024, ge=0, description="Largest response (JSON or SSE) stored for an Idempotency-Key."
    )
    drain_timeout: float = Field(10.0, ge=0, description="Graceful shutdown deadline, s.")
    auth_issuer: str | None = Field(None, description="Enable bearer-JWT auth: the required `iss`.")
    auth_audience: str | None = Field(None, description="Required `aud` (default: --resource-url).")
    auth_jwks_url: str | None = Field(None, description="Issuer JWKS URL (keys cached 5 min).")
    auth_public_key: str | None = Field(None, description="Static PEM public key (or @file) instead of JWKS.")
    auth_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "ES256"], description="Accepted JWT algorithms."
    )
    resource_url: str | None = Field(None, description="This gateway's public URL (audience, metadata).")
    authorization_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Authorization server URLs announced in resource metadata."
    )
    upstream_header: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Header for one pool's upstream requests: `POOL:Name: value`."
    )
    rate_limit: int = Field(0, ge=0, description="Requests a minute per principal/IP (0 = off).")
    max_sessions_per_client: int = Field(0, ge=0, description="Live sessions per principal/IP (0 = off).")
    max_streams_per_client: int = Field(0, ge=0, description="Open SSE connections per principal/IP (0 = off).")
    max_batch: int = Field(100, ge=1, description="Most messages in one 2025-03-26 batch.")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="Largest total request header size.")
    sse_max_line: int = Field(1 << 20, ge=1024, description="Longest SSE line accepted from upstreams.")
    trust_forwarded_for: bool = Field(False, description="Take the client IP from X-Forwarded-For.")
    task_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Tools the gateway runs as tasks (2026-07-28 tasks extension): `POOL=NAME[:required][,...]`; "
        "names are shell-style globs; repeatable; `;` separates pools in one value.",
    )
    task_sync_input: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Task tools that ask for input before their long work: `POOL=NAME[,...]`; a call without "
        "`inputResponses` is forwarded synchronously, the one with the answers becomes the task.",
    )
    task_ttl: float = Field(3600.0, gt=0, description="Lifetime of a gateway-served task from its creation, s.")
    task_poll_interval: int = Field(1000, ge=1, description="`pollIntervalMs` suggested to task clients, ms.")
    log_level: str = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log format: json or text.")

    @field_validator(
        "upstream",
        "health_probe",
        "allowed_origins",
        "auth_algorithms",
        "authorization_servers",
        "upstream_header",
        "redis_sentinel",
        "task_tools",
        "task_sync_input",
        mode="before",
    )
    @classmethod
    def _split_env_list(cls, value: object) -> object:
        # Env values arrive as plain strings; accept `a,b` for origins and one string for upstreams.
        if isinstance(value, str):
            return [value]
        return value

    @model_validator(mode="after")
    def _check_store(self) -> Settings:
        check_store(self.redis_url, self.redis_cluster, self.sentinels())
        return self

    def sentinels(self) -> tuple[tuple[str, int], ...]:
        return parse_sentinels(self.redis_sentinel)

    @property
    def embedded_store(self) -> bool:
        """No Redis named at all: the in-process store (one process only)."""
        return not self.redis_url and not self.sentinels()

    def pools(self) -> tuple[Pool, ...]:
        """Upstream pools in configuration order; the first one serves `/mcp`."""
        return parse_upstreams(self.upstream, self.instance_loss)

    def probes(self) -> dict[str, ProbeSpec]:
        """Each pool's health probe (kind and interval), from `--health-probe` and `--health-interval`."""
        return resolve_probes(self.health_probe, self.pools(), self.health_interval)

    def pool_headers(self) -> dict[str, dict[str, str]]:
        """Per-pool upstream credentials from `--upstream-header POOL:Name: value`."""
        headers: dict[str, dict[str, str]] = {}
        for item in self.upstream_header:
            pool, sep, header = item.partition(":")
            name, sep2, value = header.partition(":")
            if not (sep and sep2 and pool.strip() and name.strip()):
                raise ConfigError(f"upstream_header: expected `POOL:Name: value`, got {item!r}")
            headers.setdefault(pool.strip(), {})[name.strip()] = value.strip()
        return headers

    def origin_list(self) -> tuple[str, ...]:
        return csv(self.allowed_origins)


def csv(items: list[str]) -> tuple[str, ...]:
    """List settings given as env strings may hold several comma-separated values."""
    return tuple(part.strip() for item in items for part in item.split(",") if part.strip())
