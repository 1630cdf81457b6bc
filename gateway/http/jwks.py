"""The issuer's signing keys (JWKS), cached so that a token whose key is known never waits.

- A known key id is answered from the cache at once, whatever a fetch is doing meanwhile: no
  lock is held across a fetch, and a stale cache is refreshed in the background while its
  keys keep serving.
- An unknown key id (rotation, or junk) may trigger one refetch per `min_refresh` seconds for
  the whole replica; every request that needs a fetch joins the one in flight (single flight),
  so a burst of junk tokens costs the key server one request, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from gateway import errors
from gateway.supervisor import Supervisor

log = logging.getLogger("gateway.http.jwks")

JWKS_TTL = 300.0  # s a fetched key set is fresh; past it, it is refreshed in the background
FETCH_TIMEOUT = 5.0


class JwksCache:
    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        supervisor: Supervisor,
        *,
        min_refresh: float,
        ttl: float = JWKS_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._http = http
        self._supervisor = supervisor
        self._min_refresh = min_refresh
        self._ttl = ttl
        self._clock = clock
        self._keys: dict[str | None, Any] = {}
        self._loaded = False
        self._fetched_at = 0.0  # when the newest fetch started (the rate bound counts from there)
        self._loaded_at = 0.0
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0  # fetches started, for tests and logs

    async def key(self, kid: str | None) -> Any:
        """The key for `kid` (None: the only key, or any), fetching at most as the bounds allow."""
        now = self._clock()
        if self._loaded:
            if now - self._loaded_at >= self._ttl and now - self._fetched_at >= self._min_refresh:
                self._fetch()  # stale: refresh behind the requests, which keep using these keys
            found = self._find(kid)
            if found is not None:
                return found
            if now - self._fetched_at >= self._min_refresh:
                self._fetch()
            if self._inflight is None:
                raise KeyError(f"no JWKS key with kid {kid!r}")
        else:
            if self._inflight is None and self.fetches and now - self._fetched_at < min(self._min_refresh, 1.0):
                raise errors.UpstreamUnavailable("cannot fetch the issuer's signing keys")  # a down key server
            self._fetch()  # nothing cached yet: every request waits on the one fetch
        inflight = self._inflight
        assert inflight is not None
        await asyncio.shield(inflight)  # one waiter leaving must not cancel everyone's fetch
        if not self._loaded:
            raise errors.UpstreamUnavailable("cannot fetch the issuer's signing keys")
        found = self._find(kid)
        if found is None:
            raise KeyError(f"no JWKS key with kid {kid!r}")
        return found

    def _find(self, kid: str | None) -> Any:
        if kid is None:
            return next(iter(self._keys.values()), None)
        return self._keys.get(kid)

    def _fetch(self) -> None:
        """Start the one fetch (joined if one is in flight)."""
        if self._inflight is not None:
            return
        self._fetched_at = self._clock()
        self.fetches += 1
        self._inflight = self._supervisor.spawn(self._run_fetch(), name="jwks-fetch")

    async def _run_fetch(self) -> None:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT), self._http.get(self._url) as response:
                document = await response.json(content_type=None)
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (TimeoutError, aiohttp.ClientError, ValueError, jwt.PyJWTError) as exc:
            # Keep serving with the cached keys; the details stay in the log.
            log.warning("cannot fetch the issuer's JWKS from %s: %s", self._url, exc)
            return
        finally:
            self._inflight = None
        self._keys = {candidate.key_id: candidate.key for candidate in keys}
        self._loaded = True
        self._loaded_at = self._clock()
