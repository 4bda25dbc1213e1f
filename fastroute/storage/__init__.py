"""State that outlives a request — Responses and their items, and later keys, limits, budgets, audit.

``[storage] kind`` picks where it lives:

- ``sqlite`` (the default): one file shared by the workers of one machine (:mod:`.sqlite`);
- ``memory``: each worker its own dict, lost at exit — tests and throwaway runs (:mod:`.memory`);
- ``redis``: shared by every worker of every instance (:mod:`.redis`).

Each is a :class:`Store`; :func:`open_store` builds one and opens nothing —
``await store.start()`` does, on the worker's event loop (after the fork).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fastroute.storage.base import StorageError, StorageUnavailable, Store

if TYPE_CHECKING:
    from fastroute.config import StorageConfig

__all__ = ["Store", "StorageError", "StorageUnavailable", "open_store"]


def open_store(config: StorageConfig) -> Store:
    """The store ``[storage]`` describes, built but not started (nothing is opened or connected)."""
    if config.kind == "memory":
        from fastroute.storage.memory import MemoryStore

        return MemoryStore(config.memory_max_bytes)
    if config.kind == "redis":
        from fastroute.storage.redis import RedisStore

        assert config.redis_url is not None  # the config's validation requires it
        env = config.redis_password_env
        return RedisStore(config.redis_url, os.environ.get(env) if env else None, config.key_prefix)
    if config.kind == "sqlite":
        from fastroute.storage.sqlite import SqliteStore

        return SqliteStore(config.path)
    raise ValueError(f"unknown storage kind {config.kind!r}")  # the config's validation refuses it first
