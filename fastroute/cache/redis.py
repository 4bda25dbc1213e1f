"""The exact cache in Redis, shared by every instance: ``SET key value PX ttl`` through fastroute's own
RESP client (:mod:`fastroute.governance.resp`).

Keys are ``{prefix}cache:<hash>``.  Redis bounds what it holds (its ``maxmemory`` and eviction
policy); fastroute bounds each entry by ``max_bytes`` and gives each its TTL.  A Redis that is away
is a miss, never a failed request: said once in the log, then left alone for ``RETRY_S`` (a lookup
then costs nothing), tried again after, and said again once it answers.  A store is sent with the
client's next write (``send_soon``): no request waits for it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from fastroute.governance.resp import RespClient, RespException, encode

log = logging.getLogger("fastroute.cache")

#: seconds a Redis found away is not asked again
RETRY_S = 5.0


class RedisStore:
    def __init__(self, url: str, password_env: str | None, key_prefix: str, ttl_s: float, max_bytes: int,
                 *, timeout_s: float = 0.5) -> None:
        from fastroute.storage.redis import where

        self.url = url
        self.where = where(url)
        self.password_env = password_env
        self.prefix = f"{key_prefix}cache:"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._client: RespClient | None = None
        #: time.monotonic() before which Redis is not asked (it was found away)
        self._away_until = 0.0
        self._away = False

    async def start(self) -> None:
        password = os.environ.get(self.password_env) if self.password_env else None
        self._client = RespClient(self.url, password, timeout_s=self.timeout_s)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # a broken connection: nothing to save
                pass

    def _usable(self) -> RespClient | None:
        client = self._client
        if client is None or (self._away and time.monotonic() < self._away_until):
            return None
        return client

    async def get(self, key: str) -> bytes | None:
        client = self._usable()
        if client is None:
            return None
        try:
            value = await client.execute("GET", self.prefix + key)
        except RespException as exc:
            self._went_away(exc)
            return None
        if self._away:
            self._away = False
            log.warning("cache: %s answers again", self.where)
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> bool:
        if len(value) + len(key) > self.max_bytes:
            return False
        client = self._usable()
        if client is None:
            return False
        client.send_soon(encode(("SET", self.prefix + key, value, "PX", self.ttl_ms)), self._stored)
        return True

    def _stored(self, reply: Any, error: BaseException | None) -> None:
        if error is not None:
            self._went_away(error)

    def _went_away(self, error: BaseException) -> None:
        self._away_until = time.monotonic() + RETRY_S
        if not self._away:
            self._away = True
            log.warning("cache: %s is away (%s); requests are answered without the cache until it is back",
                        self.where, type(error).__name__)
