"""Shared fixtures: a real Redis (required, never skipped), per-test key prefixes, fakeredis.

Tiers: a test that asks for Redis (the `redis_url`, `redis`, `key_prefix` or `keys` fixtures) is marked
`redis`, one under tests/integration/ `integration`; plain `pytest` runs the rest (the unit tier: no
Redis, no network). A marked test whose service is missing stops the run loudly, never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fakeredis
import pytest
import redis as redis_sync
import redis.asyncio as aioredis

from gateway.store.keys import Keys
from tests.deploy_files import assert_deploy_files_exist

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def configured_redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


REDIS_FIXTURES = frozenset({"redis_url", "redis", "key_prefix", "keys", "_require_redis"})


TIERS = ("unit", "redis", "integration", "all")
INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tier",
        choices=TIERS,
        default=None,
        help="which tests to run: unit (no Redis, no network), redis, integration (real processes) or all; "
        "default: unit for a bare `pytest`, all when test paths are named",
    )


def tier_of(item: pytest.Item) -> str:
    if Path(str(item.fspath)).is_relative_to(INTEGRATION_DIR):
        return "integration"
    if REDIS_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "redis"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = config.getoption("tier")
    if wanted is None:
        wanted = "unit" if config.args_source == pytest.Config.ArgsSource.TESTPATHS else "all"
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        tier = tier_of(item)
        if tier != "unit":
            item.add_marker(getattr(pytest.mark, tier))
        (kept if wanted in ("all", tier) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def _require_redis() -> Iterator[None]:
    """Every run needs a real Redis; a missing one stops the run loudly instead of skipping."""
    url = configured_redis_url()
    try:
        client = redis_sync.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            ok = client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure to talk to Redis ends the run
        pytest.exit(
            f"Redis is required at {url}: start it (redis-server) or set REDIS_URL ({exc})",
            returncode=3,
        )
    if not ok:
        pytest.exit(f"Redis is required at {url}: start it (redis-server) or set REDIS_URL", returncode=3)
    yield


@pytest.fixture
def redis_url(_require_redis: None) -> str:
    return configured_redis_url()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A prefix unique to this test; every key under it is deleted at teardown."""
    prefix = f"mcpgw-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = aioredis.from_url(redis_url)
    try:
        doomed = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if doomed:
            # one DEL per key: keys of different sessions may live in different cluster slots
            async with client.pipeline(transaction=False) as pipe:
                for key in doomed:
                    pipe.delete(key)
                await pipe.execute()
    finally:
        await client.aclose()


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
async def fake_redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def deploy_files_exist() -> None:
    """The deployment files the tests/test_deploy_*.py modules read (their `pytestmark` uses it)."""
    assert_deploy_files_exist()
