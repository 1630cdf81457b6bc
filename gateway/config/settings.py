"""One frozen settings object, read from CLI flags or `MCPGW_*` environment variables.

The CLI (`gateway.cli`) maps each flag to a field of the same name, so `--session-ttl` and
`MCPGW_SESSION_TTL` set the same thing. Everything long-lived reads these values; nothing
else reads the environment.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_origin

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.config.specs import (
    Pool,
    ProbeSpec,
    check_store,
    csv,
    parse_sentinels,
    parse_upstreams,
    resolve_probes,
)
from gateway.errors import ConfigError


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
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the metrics listener (`0.0.0.0` where a scraper on another host reads it).",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Port of the metrics listener serving GET /metrics, apart from the MCP port (0 = none).",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Processes sharing the port (needs a Redis URL if > 1); each is a replica of its own "
        "in Redis and drains on SIGTERM.",
    )
    gc_young_threshold: int = Field(
        5000,
        ge=0,
        description="The served process's gen-0 garbage-collection threshold (Python's default: 700); the "
        "objects built at start-up are frozen out of every collection (`gc.freeze`). 0 leaves the collector "
        "as Python sets it.",
    )
    key_prefix: str = Field("mcpgw", min_length=1, description="Prefix of every Redis key.")
    session_ttl: float = Field(3600.0, gt=0, description="Sliding idle TTL of a session, seconds.")
    stream_maxlen: int = Field(10_000, ge=10, description="Events kept per stream (approximate trim).")
    stream_retention: float = Field(
        300.0,
        gt=0,
        description="How long an ended stream (every request answered) keeps its events for a client that lost "
        "the last one to resume, s; live streams live as long as their session.",
    )
    stream_abandon_timeout: float = Field(
        5.0,
        ge=0,
        description="End a standalone GET stream that has had no client on its replica this long, s, giving its "
        "upstream connection back (it stays resumable for --stream-retention); streams answering requests keep "
        "pumping (0 = never).",
    )
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
        "the streams you expect (requests beyond it wait for a free connection, up to --upstream-acquire-timeout).",
    )
    upstream_acquire_timeout: float = Field(
        5.0,
        gt=0,
        description="Longest wait for a free upstream connection (all --upstream-pool-size in use), s; then 503.",
    )
    replay_max_requests: int = Field(
        512,
        ge=1,
        description="Request ids remembered per session against replays (the newest are kept; older ones "
        "are forgotten a tenth of it at a time).",
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
    auth_audience: str | None = Field(
        None, description="Required `aud` (default: --resource-url; auth needs one of the two)."
    )
    auth_jwks_url: str | None = Field(None, description="Issuer JWKS URL (keys cached 5 min).")
    jwks_min_refresh: float = Field(
        30.0,
        gt=0,
        description="Least time between two JWKS fetches for unknown key ids, s (tokens with a known key never wait).",
    )
    auth_public_key: str | None = Field(None, description="Static PEM public key (or @file) instead of JWKS.")
    auth_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "ES256"], description="Accepted JWT algorithms."
    )
    resource_url: str | None = Field(
        None, description="This gateway's public URL (audience, metadata); never taken from a request's Host."
    )
    authorization_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Authorization server URLs announced in resource metadata."
    )
    upstream_header: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Header for one pool's upstream requests: `POOL:Name: value`."
    )
    # On by default, counted across the fleet in Redis: far above what one real client does, far
    # below a flood (docs/hardening.md, "Per-client limits").
    rate_limit: int = Field(
        600,
        ge=0,
        description="Requests a minute per principal/IP, one token bucket for the whole fleet (burst: as many) "
        "(0 = off).",
    )
    policy: str | None = Field(
        None,
        description="Policy file (YAML: deny, allow, limits; CEL rules), re-read when it changes; needs the "
        "`policy` extra (docs/policy.md).",
    )
    audit: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Audit sink for every decided JSON-RPC request: `stdout` or `redis` (a capped stream read "
        "with `mcp-gateway audit`); repeatable.",
    )
    audit_arguments: bool = Field(False, description="Audit records carry a tool call's arguments (else only a hash).")
    audit_maxlen: int = Field(1_000_000, ge=1000, description="Audit records kept in the Redis stream (approximate).")
    max_sessions_per_client: int = Field(
        100, ge=0, description="Live sessions per principal/IP, fleet-wide, checked before the upstream (0 = off)."
    )
    max_streams_per_client: int = Field(
        20, ge=0, description="Open SSE connections per principal/IP, fleet-wide (0 = off)."
    )
    max_batch: int = Field(100, ge=1, description="Most messages in one 2025-03-26 batch.")
    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest request head (request line and header lines), counted as it arrives: past it 431 "
        "and the connection closes.",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="A request head must arrive whole within this long of its first byte, s (else 408)."
    )
    body_idle_timeout: float = Field(
        30.0, gt=0, description="A request body may pause this long between reads, s (else 408)."
    )
    max_connections: int = Field(
        8192,
        ge=0,
        description="Open client connections per process (lowered to what the open-file limit holds); past it "
        "503, health checks still answered (0 = no cap).",
    )
    max_connections_per_client: int = Field(
        256,
        ge=0,
        description="Open connections per client address and process (429 past it; not applied with "
        "--trust-forwarded-for, whose peer is the proxy; 0 = off).",
    )
    forward_authorization: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Pools whose upstreams receive the client's Authorization header when gateway auth is off "
        "(`*` = every pool; default none: a token meant for the gateway's host is not handed on).",
    )
    sse_max_line: int = Field(1 << 20, ge=1024, description="Longest SSE line accepted from upstreams.")
    trust_forwarded_for: bool = Field(
        False, description="Take the client IP and scheme from X-Forwarded-For/-Proto (off: from no one)."
    )
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
    upstream_era: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="A pool's upstream era `POOL=ERA`: `auto` (the default: each instance is probed once with "
        "`server/discover`; 2026-07-28 clients of 2025 instances are bridged), `2025`, `2026` (only 2026-07-28: "
        "2025-era clients are bridged) or `both`; repeatable, `;` separates.",
    )
    task_ttl: float = Field(3600.0, gt=0, description="Lifetime of a gateway-served task from its creation, s.")
    task_poll_interval: int = Field(1000, ge=1, description="`pollIntervalMs` suggested to task clients, ms.")
    response_cache: bool = Field(
        True,
        description="Shared response cache (2026-07-28, SEP-2549): lists, reads and `server/discover` answers "
        "with `ttlMs` > 0 are kept in Redis and served by every replica until their ttlMs; `false` turns it off.",
    )
    response_cache_max_bytes: int = Field(
        256 * 1024, ge=0, description="Largest result kept by the response cache (larger ones pass, not kept)."
    )
    virtual_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Virtual server `NAME=POOL[,POOL...]` served at /mcp/NAME: one session over every member pool, "
        "tools and prompts named `<pool><separator><name>`; repeatable; `;` separates servers in one value.",
    )
    virtual_separator: str = Field(
        "__", min_length=1, description="Between a member pool's name and its tool or prompt names on a virtual server."
    )
    bridge_secret: str = Field(
        "",
        description="Key sealing the bridge's `requestState` (shared by every replica); empty: one random key "
        "is made at first start and kept in Redis.",
    )
    bridge_max_sessions: int = Field(
        1000, ge=1, description="Upstream sessions the bridge holds per instance; the least recently used goes."
    )
    bridge_session_idle: float = Field(
        300.0, gt=0, description="An upstream session the bridge holds is closed after this long unused, s."
    )
    log_level: str = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log format: json or text.")

    @field_validator("*", mode="before")
    @classmethod
    def _split_env_list(cls, value: object, info: ValidationInfo) -> object:
        # Env values of list settings arrive as one plain string; the parsers split `a,b` or `;` themselves.
        if isinstance(value, str) and info.field_name is not None and is_list_setting(cls, info.field_name):
            return [value]
        return value

    @field_validator("audit")
    @classmethod
    def _check_audit(cls, value: list[str]) -> list[str]:
        unknown = set(csv(value)) - {"stdout", "redis"}
        if unknown:
            raise ValueError(f"unknown audit sink(s) {sorted(unknown)} (expected stdout, redis)")
        return value

    @model_validator(mode="after")
    def _check_store(self) -> Settings:
        check_store(self.redis_url, self.redis_cluster, self.sentinels())
        return self

    @model_validator(mode="after")
    def _check_audience(self) -> Settings:
        # A Host-derived audience would accept a token minted for any host the client names.
        if self.auth_issuer and not (self.auth_audience or self.resource_url):
            raise ConfigError(
                "auth: --auth-issuer needs an explicit audience: --resource-url (this gateway's public URL) "
                "or --auth-audience; it is never taken from a request's Host"
            )
        return self

    @property
    def audience(self) -> str | None:
        """The `aud` tokens must carry (auth on)."""
        return self.auth_audience or self.resource_url

    @property
    def resource(self) -> str | None:
        """The protected resource this gateway announces (RFC 9728), configured, never a request's Host."""
        return self.resource_url or self.auth_audience

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


def is_list_setting(settings: type[BaseSettings], name: str) -> bool:
    """A setting that takes many values: repeatable on the command line, one string in the env."""
    return get_origin(settings.model_fields[name].annotation) is list
