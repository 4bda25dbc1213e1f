"""Where a worker keeps what outlives a request, as ``[storage]`` says: the audit log, the admin
API's keys and the rate-limit and budget counts.  Each comes in the three kinds — memory (one
worker's own), SQLite (one file beside the state, shared by the workers of a machine) and Redis
(every worker of every instance) — and :func:`_by_kind` is the one place that picks among them
(the counts of one machine are in shared memory rather than SQLite: see :func:`open_counters`).
Nothing is opened here: each is started on the worker's loop."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastroute.config import Config

if TYPE_CHECKING:
    from fastroute.audit import AuditLog
    from fastroute.governance.counters import Counters
    from fastroute.governance.key_store import KeyStore
    from fastroute.governance.keys import KeyRing


def _by_kind(config: Config, memory: Callable[[], Any], redis: Callable[..., Any], sqlite: Callable[..., Any],
             path: Path | None, **options: Any) -> Any:
    s = config.storage
    if s.kind == "memory":
        return memory()
    if s.kind == "redis":
        assert s.redis_url is not None  # the config's validation requires it
        return redis(s.redis_url, s.redis_password_env, s.key_prefix, **options)
    return sqlite(path, **options)


def state_path(config: Config) -> Path:
    """The state file; the other SQLite files sit beside it."""
    from fastroute.storage.sqlite import default_path

    return Path(config.storage.path).expanduser() if config.storage.path else default_path()


def open_audit(config: Config) -> AuditLog | None:
    """The audit log ``[audit]`` describes (``[audit] path``, else its default, for SQLite); None when off."""
    a = config.audit
    if not a.enabled:
        return None
    from fastroute import audit

    return _by_kind(config, audit.MemoryAuditLog, audit.RedisAuditLog, audit.SqliteAuditLog,
                    Path(a.path) if a.path else None, retention_days=a.retention_days or None)


def open_key_store(config: Config) -> KeyStore | None:
    """Where the admin API's keys are (``keys.sqlite3`` for SQLite); None while the admin API is off."""
    env = config.admin.token_env
    if not env or not os.environ.get(env):
        return None
    from fastroute.governance import key_store

    return _by_kind(config, key_store.MemoryKeyStore, key_store.RedisKeyStore, key_store.SqliteKeyStore,
                    state_path(config).with_name("keys.sqlite3"))


def open_counters(config: Config, keys: KeyRing) -> Counters | None:
    """Where the keys' rate limits and budgets are counted; for ``kind = "sqlite"`` (one machine)
    ``limits.shm`` beside the state, a file every worker maps into memory and counts in under a
    file lock (:mod:`fastroute.governance.shm_counters`: no thread, a few µs a request); None when
    no key has a limit and none can be made (the admin API is off)."""
    if not keys.limited and keys.store is None:
        return None
    from fastroute.governance import counters
    from fastroute.governance.shm_counters import ShmCounters

    return _by_kind(config, counters.MemoryCounters, counters.RedisCounters, ShmCounters,
                    state_path(config).with_name("limits.shm"))
