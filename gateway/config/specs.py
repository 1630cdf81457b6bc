"""The string forms of the settings, parsed: upstream pools, health probes, Sentinel addresses,
the store URL, and the YAML/TOML config file. Pure functions and frozen values, no IO but the file read."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

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


def csv(items: list[str]) -> tuple[str, ...]:
    """List settings given as env strings may hold several comma-separated values."""
    return tuple(part.strip() for item in items for part in item.split(",") if part.strip())
